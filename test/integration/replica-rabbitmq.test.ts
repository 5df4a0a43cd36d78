import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { blacklistDataset, blacklistExpireAtMs } from '../../src/datasets/blacklist.ts';
import { encodeEvent } from '../../src/events/codec.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import type { BlacklistKeys } from '../../src/datasets/blacklist.ts';
import { blacklistKeys } from '../../src/datasets/blacklist.ts';
import { blacklistSource } from '../../src/sources/blacklist-source.ts';
import { revokeInRedis } from '../support/blacklist-writes.ts';
import type { RedisNodeClient as RedisClient } from '../../src/redis/client.ts';
import type { RabbitMQBus } from '../../src/amqp/rabbitmq-bus.ts';
import { RABBITMQ_URL, redisClient, uniqueName } from '../support/env.ts';
import { deleteExchanges, testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const topics: string[] = [];
const closers: Array<() => Promise<void>> = [];
let redis: RedisClient;
let base: string;

before(async () => {
  redis = await redisClient();
  base = uniqueName('it');
});
after(async () => {
  for (const close of closers.reverse()) await close();
  for await (const keys of redis.scanIterator({ MATCH: `${base}:*`, COUNT: 1000 }))
    if (keys.length) await redis.del(keys);
  await redis.quit();
  await deleteExchanges(...topics);
});

function topic(): string {
  const t = uniqueName('it.topic');
  topics.push(t);
  return t;
}

async function bus(): Promise<RabbitMQBus> {
  const b = await testBus();
  closers.push(() => b.close());
  return b;
}

async function start<V>(replica: ReplicatedCache<V>): Promise<ReplicatedCache<V>> {
  closers.push(() => replica.close());
  await replica.start();
  return replica;
}

/** Logout as the auth service commits it (its script); returns the version and epoch. */
async function revoke(
  keys: BlacklistKeys,
  jti: string,
  expireAtS: number,
): Promise<{ version: number; epoch: string }> {
  const result = await revokeInRedis(redis, keys, jti, expireAtS);
  assert.ok(result, `${jti} was not revoked before`);
  return result;
}

describe('replicas over RabbitMQ, loaded from Redis (the JWT blacklist)', () => {
  it('bootstraps from SCAN with TTLs, then follows logout events on every instance', async () => {
    const t = topic();
    const keys = blacklistKeys(`${base}:boot`);
    const nowS = Math.floor(Date.now() / 1000);
    for (let i = 0; i < 3000; i++) await revoke(keys, `boot-${i}`, nowS + 600 + (i % 60));
    const make = async () =>
      start(
        new ReplicatedCache<number>({
          dataset: { ...blacklistDataset, topic: t },
          bus: await bus(),
          source: blacklistSource(redis, { keys, scanCount: 500 }),
          versionCheckIntervalMs: 0,
        }),
      );
    const [a, b] = await Promise.all([make(), make()]);
    for (const r of [a, b]) {
      assert.equal(r.size, 3000);
      assert.equal(r.version, 3000);
      assert.equal(r.has('boot-7'), true);
      const expireAt = blacklistExpireAtMs(r.get('boot-7')!);
      assert.equal(expireAt, (nowS + 607) * 1000, 'the exact expiry (EXPIRETIME)');
    }
    const publisher = await bus();
    const { version, epoch } = await revoke(keys, 'logged-out', nowS + 900);
    const { body } = encodeEvent(
      { type: 'blacklist_added', jti: 'logged-out', expire_at: nowS + 900 },
      { version, epoch, published_at: Date.now() },
    );
    await publisher.publish(t, body);
    await waitFor(() => a.has('logged-out') && b.has('logged-out'), 'both instances revoked the token', 5000);
    assert.equal(a.version, 3001);
  });

  it('repairs an unpublished write from the change log, within the staleness bound', async () => {
    const t = topic();
    const keys = blacklistKeys(`${base}:quiet`);
    await revoke(keys, 'before', Math.floor(Date.now() / 1000) + 600);
    const replica = await start(
      new ReplicatedCache<number>({
        dataset: { ...blacklistDataset, topic: t },
        bus: await bus(),
        source: blacklistSource(redis, { keys }),
      }),
    );
    await revoke(keys, 'never-announced', Math.floor(Date.now() / 1000) + 600);
    await waitFor(() => replica.has('never-announced'), 'the replica to find the revocation itself', 5000);
    const stats = replica.stats();
    assert.equal(stats.catch_ups, 1, 'one read of the log, no reload');
    assert.equal(stats.resyncs, 1);
  });

  it('with CACHE_EVENT_SECRET, applies signed events and refuses forged ones off the real broker', async () => {
    const t = topic();
    const secret = 'integration-secret-123';
    const source = new MemorySource<Character>();
    const replica = await start(
      new ReplicatedCache<Character>({
        dataset: { ...catalogDataset, topic: t },
        bus: await bus(),
        source,
        eventSecret: secret,
        versionCheckIntervalMs: 0,
      }),
    );
    const publisher = await bus();
    const forged = encodeEvent({ type: 'upsert', character: character('forged') }, { version: 1 });
    await publisher.publish(t, forged.body, { headers: forged.headers });
    const signed = encodeEvent({ type: 'upsert', character: character('signed') }, { version: 1 }, secret);
    await publisher.publish(t, signed.body, { headers: signed.headers });
    await waitFor(() => replica.get('id-signed') !== undefined, 'the signed event');
    assert.equal(replica.get('id-forged'), undefined);
    assert.deepEqual(replica.stats().rejected_by_code, { EVENT_UNSIGNED: 1 });
  });
});

describe('interop with the seed Python peers (kombu)', () => {
  it("applies the seed kombu publisher's full_refresh, upsert and delete (no versions)", async () => {
    const t = topic();
    const source = new MemorySource<Character>();
    source.set('id-old', character('old'));
    const replica = await start(
      new ReplicatedCache<Character>({
        dataset: { ...catalogDataset, topic: t },
        bus: await bus(),
        source,
        versionCheckIntervalMs: 0,
      }),
    );
    const seedShape = (c: Character) => ({
      id: c.id,
      code: c.code,
      name: c.name,
      match_label: c.match_label,
      type_label: c.type_label,
      dialog: c.dialog,
    });
    const events = [
      {
        type: 'full_refresh',
        characters: [seedShape(character('pet', 'plastic')), seedShape(character('can', 'metal'))],
      },
      { type: 'upsert', character: { ...seedShape(character('glass', 'glass')), name: 'Gläs' } },
      { type: 'delete', character_id: 'id-can' },
    ];
    await run(PYTHON, [
      join(import.meta.dirname, '../interop/kombu_publish.py'),
      RABBITMQ_URL,
      t,
      ...events.map((e) => JSON.stringify(e)),
    ]);
    await waitFor(() => replica.stats().events_applied === 3, 'three seed events applied', 10_000);
    assert.deepEqual(
      replica
        .values()
        .map((c) => c.code)
        .sort(),
      ['glass', 'pet'],
    );
    assert.equal(replica.get('id-glass')?.name, 'Gläs');
    assert.equal(replica.findOne('match_label', 'plastic')?.code, 'pet');
    assert.equal(replica.version, 1, 'unversioned events leave the version alone');
  });

  it('publishes events that a kombu consumer with accept=["json"] decodes', async () => {
    const t = topic();
    const consumer = spawn(
      PYTHON,
      [join(import.meta.dirname, '../interop/kombu_consume.py'), RABBITMQ_URL, t, '1', '10'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    consumer.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => consumer.on('exit', resolve));
    await waitFor(() => out.includes('ready'), 'the kombu consumer', 15_000);
    const publisher = await bus();
    const { body } = encodeEvent(
      { type: 'upsert', character: character('ünïcode') },
      { version: 7, origin: publisher.instanceId },
    );
    await publisher.publish(t, body);
    assert.equal(await exited, 0);
    const decoded = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
    assert.equal(decoded.type, 'upsert');
    assert.equal(decoded.version, 7);
    assert.equal((decoded.character as Character).code, 'ünïcode');
  });
});
