import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { appendToOutbox } from '../../src/outbox/outbox.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import type { RabbitMQBus } from '../../src/amqp/rabbitmq-bus.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { catalogFixture } from '../support/catalog-fixture.ts';
import { rabbitProxy, testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import { waitFor } from '../support/wait.ts';
import { randomUUID } from 'node:crypto';

const fx = catalogFixture('it.catalog');
const { topic, dataset } = fx;

function uuidCharacter(code: string): Character {
  return { ...character(code), id: randomUUID() };
}

async function replica(bus?: RabbitMQBus): Promise<ReplicatedCache<Character>> {
  const b = bus ?? (await testBus());
  const r = new ReplicatedCache<Character>({
    dataset,
    bus: b,
    source: catalogSource(fx.db.pool),
    versionCheckIntervalMs: 0,
  });
  fx.defer(async () => {
    await r.close();
    if (!bus) await b.close();
  });
  await r.start();
  return r;
}

const relay = (proxy?: TcpProxy) =>
  fx.startRelay({ proxy, bus: { publishTimeoutMs: 1000 }, pollIntervalMs: 200 });
const stopRelays = () => fx.stopRelays();

describe('outbox and relay (PostgreSQL + RabbitMQ)', () => {
  it('publishes a committed write to every replica, with its version, in milliseconds', async () => {
    const [a, b] = await Promise.all([replica(), replica()]);
    await relay();
    const c = uuidCharacter('plastic');
    const version = await upsertCharacter(fx.db.pool, { ...c, match_label: 'plastic' }, topic);
    await waitFor(
      () => a.version === version && b.version === version,
      'both replicas at the new version',
      5000,
    );
    for (const r of [a, b]) {
      assert.equal(r.get(c.id)?.code, 'plastic');
      assert.equal(r.findOne('match_label', 'plastic')?.id, c.id);
      assert.equal(r.stats().gaps, 0);
      assert.ok((r.stats().lag_ms ?? Infinity) < 5000);
    }
  });

  it('a rolled-back write publishes nothing and uses no version', async () => {
    const before = await catalogSource(fx.db.pool).version();
    await assert.rejects(
      withTransaction(fx.db.pool, async (tx) => {
        await appendToOutbox(tx, {
          dataset: 'catalog',
          topic,
          payload: { type: 'delete', character_id: 'x' },
        });
        throw new Error('abort');
      }),
    );
    assert.equal(await catalogSource(fx.db.pool).version(), before);
    const { rows } = await fx.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM cachecast_outbox WHERE version > $1',
      [before],
    );
    assert.equal(rows[0]!.n, 0);
  });

  it('concurrent writers get gapless versions in commit order', async () => {
    const before = await catalogSource(fx.db.pool).version();
    const versions = await Promise.all(
      Array.from({ length: 30 }, (_, i) => upsertCharacter(fx.db.pool, uuidCharacter(`c${i}`), topic)),
    );
    assert.deepEqual(
      [...versions].sort((x, y) => x - y),
      Array.from({ length: 30 }, (_, i) => before + i + 1),
    );
  });

  it('keeps accepting writes while the broker is unreachable and publishes them when it returns', async () => {
    await stopRelays();
    const r = await replica();
    const proxy = await rabbitProxy();
    fx.defer(() => proxy.close());
    const rel = await relay(proxy);
    await waitFor(async () => (await rel.pending()) === 0, 'outbox drained');
    proxy.cut();
    const written: Character[] = [];
    for (let i = 0; i < 10; i++) {
      const c = uuidCharacter(`outage-${i}`);
      await upsertCharacter(fx.db.pool, c, topic); // succeeds: the broker is not on the write path
      written.push(c);
    }
    await waitFor(() => rel.stats.failures >= 1, 'the relay to try and fail', 5000);
    assert.equal(await rel.pending(), 10, 'events wait in the outbox');
    proxy.restore();
    const target = await catalogSource(fx.db.pool).version();
    await waitFor(() => r.version === target, 'replica caught up after the outage', 15_000);
    for (const c of written) assert.ok(r.get(c.id));
    // A publish that timed out during the cut may still land; the rows are re-sent and marked.
    await waitFor(async () => (await rel.pending()) === 0, 'every row marked sent', 10_000);
  });

  it('several relays publish every event, in order, without gaps at the replicas', async () => {
    await stopRelays();
    const r = await replica();
    const relays = await Promise.all([relay(), relay(), relay()]);
    const gapsBefore = r.stats().gaps;
    for (let i = 0; i < 40; i++) await upsertCharacter(fx.db.pool, uuidCharacter(`multi-${i}`), topic);
    const target = await catalogSource(fx.db.pool).version();
    await waitFor(() => r.version === target, 'replica at the last version', 10_000);
    assert.equal(r.stats().gaps, gapsBefore, 'events arrived in version order');
    // A replica may apply the last event before its relay has marked the row sent (the mark
    // follows the broker's confirm), so wait for the mark rather than racing it.
    await waitFor(async () => (await relays[0].pending()) === 0, 'every row marked sent', 10_000);
    // A relay counts its batch once its COMMIT answers, just after the rows read as sent.
    await waitFor(
      () => relays.reduce((n, rel) => n + rel.stats.published, 0) >= 40,
      'every event counted as published',
      10_000,
    );
  });

  it('publishes in numeric version order across 9 -> 10 -> 100 (no text ordering)', async () => {
    await stopRelays();
    const bus = await testBus();
    fx.defer(() => bus.close());
    const seen: number[] = [];
    await bus.subscribe(
      topic,
      (m) => void seen.push((JSON.parse(m.body.toString()) as { version: number }).version),
    );
    const first = (await catalogSource(fx.db.pool).version()) + 1;
    for (let i = 0; i < 120; i++) await upsertCharacter(fx.db.pool, uuidCharacter(`order-${i}`), topic);
    await relay();
    await waitFor(() => seen.length >= 120, '120 events', 10_000);
    assert.deepEqual(
      seen.slice(0, 120),
      Array.from({ length: 120 }, (_, i) => first + i),
    );
  });
});
