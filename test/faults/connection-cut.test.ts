import assert from 'node:assert/strict';
import { Connection } from 'rabbitmq-client';
import type { Bus } from '../../src/bus/bus.ts';
import { randomUUID } from 'node:crypto';
import { before, describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import type { OutboxRelay } from '../../src/outbox/relay.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { catalogFixture } from '../support/catalog-fixture.ts';
import { RABBITMQ_URL } from '../support/env.ts';
import { rabbitProxy, testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import { delay, waitFor } from '../support/wait.ts';

const fx = catalogFixture('fault.catalog');
const { topic, dataset } = fx;
let relay: OutboxRelay;

before(async () => {
  relay = await fx.startRelay();
});

const write = (code: string): Promise<number> =>
  upsertCharacter(fx.db.pool, { ...character(code), id: randomUUID() } satisfies Character, topic);

/** A replica whose broker connection runs through its own proxy. */
async function proxiedReplica(): Promise<{ replica: ReplicatedCache<Character>; proxy: TcpProxy; bus: Bus }> {
  const proxy = await rabbitProxy();
  const bus = await testBus(proxy);
  const replica = new ReplicatedCache<Character>({
    dataset,
    bus,
    source: catalogSource(fx.db.pool),
    versionCheckIntervalMs: 0,
  });
  fx.defer(async () => {
    await replica.close();
    await bus.close();
    await proxy.close();
  });
  await replica.start();
  return { replica, proxy, bus };
}

/** Waits until the replica is ready at the source's version, then checks every entry. */
async function assertConverged(replica: ReplicatedCache<Character>): Promise<void> {
  await waitFor(() => replica.state === 'ready', 'replica ready again', 15_000);
  await waitFor(
    async () => replica.version === (await catalogSource(fx.db.pool).version()),
    'replica caught up',
  );
  await assertEqualsSource(replica);
}

async function assertEqualsSource(replica: ReplicatedCache<Character>): Promise<void> {
  const source = catalogSource(fx.db.pool);
  const entries = new Map<string, Character>();
  const { version } = await source.load((k, v) => entries.set(k, v));
  assert.equal(replica.version, version);
  assert.equal(replica.size, entries.size);
  for (const [id, c] of entries) assert.deepEqual(replica.get(id), c);
}

describe('faults: connections cut and stalled between a replica and RabbitMQ', () => {
  it('events published during a cut are not lost: degraded during, ready and equal to the source after', async () => {
    const { replica, proxy } = await proxiedReplica();
    await write('before-cut');
    await waitFor(
      async () => replica.version === (await catalogSource(fx.db.pool).version()),
      'replica current',
    );
    proxy.cut();
    await waitFor(() => replica.state === 'degraded', 'replica degraded');
    for (let i = 0; i < 20; i++) await write(`during-cut-${i}`);
    await waitFor(async () => (await relay.pending()) === 0, 'relay published the events');
    assert.equal(replica.state, 'degraded');
    proxy.restore();
    await assertConverged(replica);
    assert.equal(replica.stats().last_resync_reason, 'reconnect');
  });

  it('a stalled connection is detected by heartbeats, reported degraded, and repaired', async () => {
    const { replica, proxy } = await proxiedReplica();
    proxy.stall();
    await write('during-stall');
    // Heartbeat 2 s: two missed beats mark the connection dead.
    await waitFor(() => replica.state === 'degraded', 'replica degraded by heartbeat timeout', 15_000);
    proxy.restore();
    await assertConverged(replica);
  });

  it('repeated cuts under a steady write load end with every replica equal to the source', async () => {
    const replicas = await Promise.all([proxiedReplica(), proxiedReplica(), proxiedReplica()]);
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await write(`load-${written++}`);
        await delay(5);
      }
    })();
    for (let round = 0; round < 3; round++) {
      for (const { proxy } of replicas) {
        proxy.cut();
        await delay(150);
        // The load is part of what is tested: each cut lasts until 2 writes happened during it.
        const from = written;
        await waitFor(() => written >= from + 2, '2 writes during the cut', 15_000);
        proxy.restore();
      }
    }
    writing = false;
    await writer;
    const target = await catalogSource(fx.db.pool).version();
    for (const { replica } of replicas) {
      await waitFor(
        () => replica.version === target && replica.state === 'ready',
        'replica converged',
        20_000,
      );
      await assertEqualsSource(replica);
    }
  });
});

describe('faults: the instance queue is lost while the replica is away', () => {
  it('events dropped with no queue bound are repaired by the resync on reconnect', async () => {
    const { replica, proxy, bus } = await proxiedReplica();
    proxy.cut();
    await waitFor(() => replica.state === 'degraded', 'replica degraded');
    // What x-expires or a broker reset without persistence does: the queue is gone.
    const admin = new Connection(RABBITMQ_URL);
    await admin.queueDelete({ queue: `${topic}.${bus.instanceId}`, ifUnused: false });
    await admin.close();
    for (let i = 0; i < 5; i++) await write(`no-queue-${i}`);
    await waitFor(async () => (await relay.pending()) === 0, 'relay published into the void');
    proxy.restore();
    await assertConverged(replica);
  });
});
