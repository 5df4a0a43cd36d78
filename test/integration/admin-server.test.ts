import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { AdminServer } from '../../src/observe/admin-server.ts';
import { createMetricsRegistry } from '../../src/observe/metrics.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import { deferred } from '../../src/util/deferred.ts';
import { character, publishEvent } from '../support/replica-fixtures.ts';
import { waitFor } from '../support/wait.ts';

const broker = new MemoryBroker();
const bus = new MemoryBus(broker);
const source = new MemorySource<Character>();
source.set('id-a', character('a'));
const gate = deferred();
const load = source.load.bind(source);
source.load = async (put) => {
  await gate.promise;
  return load(put);
};
const replica = new ReplicatedCache<Character>({
  dataset: catalogDataset,
  bus,
  source,
  versionCheckIntervalMs: 0,
});
const replicas = () => [replica as ReplicatedCache<unknown>];
const admin = new AdminServer({
  replicas,
  registry: createMetricsRegistry(replicas, { defaultMetrics: false }),
  routes: { '/cache': () => ({ hits: 3 }) },
});
let base = '';

after(async () => {
  await replica.close();
  await Promise.all([admin.close(), admin.close()]);
  await bus.close();
});

describe('admin server', () => {
  it('is healthy at once and ready only once every replica has synced', async () => {
    base = `http://127.0.0.1:${await admin.listen(0, '127.0.0.1')}`;
    const started = replica.start();
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    const notReady = await fetch(`${base}/readyz`);
    assert.equal(notReady.status, 503);
    assert.deepEqual(await notReady.json(), { status: 'not_ready', replicas: { catalog: 'syncing' } });
    gate.resolve();
    await started;
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
  });

  it('serves /replicas with the contract fields', async () => {
    await publishEvent(
      new MemoryBus(broker),
      catalogDataset.topic,
      { type: 'upsert', character: character('b') },
      { version: 2, published_at: Date.now() },
    );
    await waitFor(() => replica.version === 2, 'event applied');
    const body = (await (await fetch(`${base}/replicas`)).json()) as Array<Record<string, unknown>>;
    assert.equal(body.length, 1);
    const r = body[0]!;
    for (const field of ['dataset', 'state', 'version', 'size', 'last_event_at', 'lag_ms'])
      assert.ok(field in r, field);
    assert.equal(r.dataset, 'catalog');
    assert.equal(r.state, 'ready');
    assert.equal(r.version, 2);
    assert.equal(r.size, 2);
    assert.equal(typeof r.lag_ms, 'number');
  });

  it('serves Prometheus metrics per dataset', async () => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    assert.match(text, /cachecast_replica_size\{dataset="catalog"\} 2/);
    assert.match(text, /cachecast_replica_version\{dataset="catalog"\} 2/);
    assert.match(text, /cachecast_replica_state\{dataset="catalog",state="ready"\} 1/);
    assert.match(text, /cachecast_replica_events_applied_total\{dataset="catalog"\} 1/);
  });

  it('serves extra routes, 404s unknown paths and refuses other methods', async () => {
    assert.deepEqual(await (await fetch(`${base}/cache`)).json(), { hits: 3 });
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(`${base}/replicas`, { method: 'POST' })).status, 405);
  });

  it('reports a degraded replica as still ready (it serves) and in /replicas', async () => {
    broker.disconnect(bus);
    const body = (await (await fetch(`${base}/replicas`)).json()) as Array<Record<string, unknown>>;
    assert.equal(body[0]!.state, 'degraded');
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    broker.reconnect(bus);
    await waitFor(() => replica.state === 'ready', 'ready again');
  });
});

describe('admin server: readiness with a fail-closed replica', () => {
  it('is not ready while a `refuse` replica is degraded, and ready again once it resynced', async () => {
    const localBroker = new MemoryBroker();
    const localBus = new MemoryBus(localBroker);
    const strict = new ReplicatedCache<Character>({
      dataset: catalogDataset,
      bus: localBus,
      source: new MemorySource<Character>(),
      degradedReads: 'refuse',
      versionCheckIntervalMs: 0,
    });
    const server = new AdminServer({
      replicas: () => [strict as ReplicatedCache<unknown>],
      registry: createMetricsRegistry(() => [], { defaultMetrics: false }),
    });
    const url = `http://127.0.0.1:${await server.listen(0, '127.0.0.1')}/readyz`;
    try {
      assert.equal((await fetch(url)).status, 503, 'syncing');
      await strict.start();
      assert.equal((await fetch(url)).status, 200);
      localBroker.disconnect(localBus);
      assert.equal((await fetch(url)).status, 503, 'degraded and fail-closed');
      localBroker.reconnect(localBus);
      await waitFor(() => strict.state === 'ready', 'resynced');
      assert.equal((await fetch(url)).status, 200);
    } finally {
      await strict.close();
      await server.close();
      await localBus.close();
    }
  });
});

describe('admin server: detail routes need ADMIN_PORT_TOKEN', () => {
  const registry = () => createMetricsRegistry(() => [], { defaultMetrics: false });
  const secret = { recent: [{ sub: 'a-user', jti: 'a-token-id' }] };

  it('answers a private route only with the bearer token; open routes stay open', async () => {
    const token = 'admin-port-token-0123456789';
    const server = new AdminServer({
      replicas: () => [],
      registry: registry(),
      routes: { '/cache': () => ({ hits: 1 }) },
      privateRoutes: { '/decisions': () => secret },
      token,
    });
    const base = `http://127.0.0.1:${await server.listen(0, '127.0.0.1')}`;
    try {
      for (const authorization of [undefined, 'Bearer wrong', `Bearer ${token}x`, token, `Basic ${token}`]) {
        const res = await fetch(`${base}/decisions`, authorization ? { headers: { authorization } } : {});
        const text = await res.text();
        assert.equal(res.status, 401, String(authorization));
        assert.equal(res.headers.get('www-authenticate'), 'Bearer');
        assert.ok(!text.includes('a-user') && !text.includes('a-token-id'), text);
      }
      const res = await fetch(`${base}/decisions`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), secret);
      for (const path of ['/healthz', '/readyz', '/metrics', '/replicas', '/cache'])
        assert.equal((await fetch(`${base}${path}`)).status, 200, path);
      // Prototype names are not routes.
      for (const path of ['/constructor', '/__proto__', '/toString'])
        assert.equal((await fetch(`${base}${path}`)).status, 404, path);
    } finally {
      await server.close();
    }
  });

  it('turns private routes off (403 admin_disabled) while no token is set', async () => {
    const server = new AdminServer({
      replicas: () => [],
      registry: registry(),
      privateRoutes: { '/decisions': () => secret },
    });
    const base = `http://127.0.0.1:${await server.listen(0, '127.0.0.1')}`;
    try {
      const res = await fetch(`${base}/decisions`, { headers: { authorization: 'Bearer anything' } });
      assert.equal(res.status, 403);
      assert.deepEqual(await res.json(), {
        error: 'admin_disabled',
        message: 'set ADMIN_PORT_TOKEN to enable this endpoint',
      });
    } finally {
      await server.close();
    }
  });
});
