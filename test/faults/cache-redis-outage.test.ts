import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { CacheKey } from '../../src/services/cache-keys.ts';
import { grantId } from '../../src/catalog/grant-id.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import type { CollectedCharacter } from '../../src/services/catalog/user-collections.ts';
import {
  loadUserCharacters,
  loadUserGrants,
  UserCollections,
} from '../../src/services/catalog/user-collections.ts';
import type { TestDatabase } from '../support/env.ts';
import { REDIS_URL, redisClient, testDatabase, uniqueName } from '../support/env.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { freePort, startRedisServer } from '../support/redis-server.ts';

/** Bound on any one read while Redis is down or stalled: the command timeout plus a margin for a busy 2-core machine. */
const COMMAND_TIMEOUT_MS = 500; // a healthy loopback read never nears it, even on a loaded machine
const MARGIN_MS = 1000;
const OPEN_MS = 180_000;
const USERS = 30;

/**
 * Counts what reaches Redis: every TCP connection accepted and every byte
 * the client sends, in front of the fault proxy (client -> counter -> proxy -> Redis).
 */
class CountingFront {
  connections = 0;
  bytes = 0;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  port = 0;

  constructor(targetPort: number) {
    this.#server = createServer((client) => {
      this.connections++;
      const upstream = connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) this.#sockets.add(s);
      client.on('data', (chunk: Buffer) => {
        this.bytes += chunk.length;
        upstream.write(chunk);
      });
      upstream.on('data', (chunk: Buffer) => client.write(chunk));
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      for (const s of [client, upstream]) {
        s.on('close', close);
        s.on('error', close);
      }
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  snapshot(): { connections: number; bytes: number } {
    return { connections: this.connections, bytes: this.bytes };
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

let db: TestDatabase;
const prefix = uniqueName('fault.cache');
/** What PostgreSQL holds for each user: the answer every read must give. */
const truth = new Map<string, CollectedCharacter[]>();
/** The catalog the collections join with (the service uses its replica). */
const catalog = new Map<string, Character>();

async function grant(userId: string, characterId: string, at: string): Promise<void> {
  await db.pool.query(
    'INSERT INTO character_grants (id, user_id, character_id, acquired_at) VALUES ($1, $2, $3, $4)',
    [grantId(userId, characterId), userId, characterId, at],
  );
  truth.set(userId, await loadUserCharacters(db.pool, userId));
}

before(async () => {
  db = await testDatabase();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const { rows } = await db.pool.query<{ id: string }>(
      `INSERT INTO characters (id, code, name, match_label) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id::text AS id`,
      [`c-${i}`, `Character ${i}`, `label-${i}`],
    );
    ids.push(rows[0]!.id);
  }
  const { rows } = await db.pool.query<Character>(
    'SELECT id::text AS id, code, name, match_label, type_label, dialog, is_default FROM characters',
  );
  for (const c of rows) catalog.set(c.id, c);
  for (let u = 0; u < USERS; u++) {
    for (let c = 0; c <= u % 3; c++) await grant(`user-${u}`, ids[c]!, `2026-01-0${c + 1}T00:00:00Z`);
  }
});
after(async () => {
  const redis = await redisClient();
  for await (const keys of redis.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
    if (keys.length > 0) await redis.del(keys);
  }
  await redis.close();
  await db.drop();
});

function newCache(
  redisUrl: string,
  clock: FakeClock,
  keyPrefix: string,
): { cache: CacheAside; collections: UserCollections } {
  const cache = new CacheAside({
    redisUrl,
    keyPrefix,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    clock,
    breaker: { failureThreshold: 10, failureWindowMs: 60_000, openMs: OPEN_MS },
  });
  return { cache, collections: new UserCollections(cache, db.pool, catalog) };
}

/** Reads every user once, checks each answer against PostgreSQL, returns the slowest read in ms. */
async function readAll(collections: UserCollections, users = USERS): Promise<number> {
  let slowest = 0;
  for (let u = 0; u < users; u++) {
    const id = `user-${u}`;
    const started = performance.now();
    const got = await collections.get(id);
    slowest = Math.max(slowest, performance.now() - started);
    assert.deepEqual(got, { user_id: id, characters: truth.get(id) }, `${id} answered correctly`);
  }
  return slowest;
}

async function proxiedRedis(): Promise<{ proxy: TcpProxy; front: CountingFront; url: string }> {
  const target = new URL(REDIS_URL);
  const proxy = await TcpProxy.to(REDIS_URL, 6379).start();
  const front = await new CountingFront(proxy.port).start();
  return { proxy, front, url: `redis://127.0.0.1:${front.port}${target.pathname}` };
}

/** Drives an outage from start to end and checks every rule the issue states. */
async function outage(fault: 'cut' | 'stall'): Promise<void> {
  const { proxy, front, url } = await proxiedRedis();
  const clock = new FakeClock(Date.now());
  const { cache, collections } = newCache(url, clock, `${prefix}-${fault}`);
  try {
    await readAll(collections);
    await cache.settled();
    await readAll(collections);
    assert.equal(cache.stats().redis_hits, USERS, 'warm: the second pass came from Redis');

    if (fault === 'cut') proxy.cut();
    else proxy.stall();
    // Answers keep coming from PostgreSQL, none slower than the command timeout (+ margin).
    const slowest = await readAll(collections);
    assert.ok(
      slowest < COMMAND_TIMEOUT_MS + MARGIN_MS,
      `slowest read during the ${fault}: ${slowest.toFixed(0)} ms (bound ${COMMAND_TIMEOUT_MS} + ${MARGIN_MS})`,
    );
    await cache.settled();
    const opened = cache.stats();
    assert.equal(opened.is_open, true, 'the breaker opened');
    assert.equal(opened.breaker.state, 'open');
    assert.ok(opened.fallbacks >= USERS + USERS, 'the database answered');
    assert.ok(opened.redis_errors_by_kind[fault === 'cut' ? 'connection' : 'timeout'] > 0);

    // While open: no Redis call at all, not even a connection attempt; reads stay correct and fast.
    const seen = front.snapshot();
    const skipped = opened.redis_skipped;
    const slowestOpen = await readAll(collections);
    await cache.invalidate(CacheKey.USER_CHARACTERS, { user_id: 'user-0' });
    await cache.settled();
    assert.deepEqual(front.snapshot(), seen, 'nothing reached Redis while the breaker was open');
    assert.ok(cache.stats().redis_skipped >= skipped + USERS);
    assert.ok(
      slowestOpen < COMMAND_TIMEOUT_MS + MARGIN_MS,
      `slowest read while open: ${slowestOpen.toFixed(0)} ms`,
    );
    await clock.advance(OPEN_MS - 1);
    await readAll(collections, 3);
    assert.deepEqual(front.snapshot(), seen, 'still nothing a millisecond before the open period ends');

    // Redis returns; after the open period one trial call closes the breaker.
    proxy.restore();
    await clock.advance(1);
    await readAll(collections);
    await cache.settled();
    const closed = cache.stats();
    assert.equal(closed.is_open, false, 'closed after Redis returned');
    assert.equal(closed.breaker.state, 'closed');
    assert.ok(front.connections > seen.connections, 'it reconnected for the trial');
    const hits = closed.redis_hits;
    await readAll(collections);
    assert.ok(cache.stats().redis_hits >= hits + USERS - 1, 'reads come from Redis again');
  } finally {
    await cache.close();
    await front.close();
    await proxy.close();
  }
}

describe('faults: Redis cut, stalled, killed under the cache-aside service', () => {
  it('a cut Redis: answers from PostgreSQL within the command timeout; the breaker opens, makes no call, closes', async () => {
    await outage('cut');
  });

  it('a stalled Redis (a black hole): the same, every read bounded by the command timeout', async () => {
    await outage('stall');
  });

  it('an invalidation made while Redis was unreachable is carried out once it returns: no stale read', async () => {
    const { proxy, front, url } = await proxiedRedis();
    const clock = new FakeClock(Date.now());
    const keyPrefix = `${prefix}-invalidate`;
    const { cache, collections } = newCache(url, clock, keyPrefix);
    try {
      const user = 'user-1';
      await collections.get(user);
      await cache.settled();
      assert.deepEqual((await collections.get(user)).characters, truth.get(user));
      const key = `${keyPrefix}:${CacheKey.USER_CHARACTERS.version}:users:${user}:characters`;

      proxy.cut();
      const { rows } = await db.pool.query<{ id: string }>(
        `SELECT id::text AS id FROM characters WHERE code = 'c-4'`,
      );
      await grant(user, rows[0]!.id, '2026-02-01T00:00:00Z');
      assert.equal(await collections.invalidate([user]).then(() => cache.stats().pending_invalidations), 1);
      assert.deepEqual((await collections.get(user)).characters, truth.get(user), 'fresh from PostgreSQL');
      await cache.settled(); // its write-back failed too: Redis keeps the stale value

      proxy.restore();
      const redis = await redisClient(REDIS_URL);
      try {
        assert.ok(await redis.exists(key), 'Redis still holds the stale collection');
        // Another key first (it must not bring the stale one back), then the invalidated user.
        await readAll(collections, 1);
        assert.deepEqual(
          (await collections.get(user)).characters,
          truth.get(user),
          'not the stale Redis value',
        );
        await cache.settled();
        assert.equal(cache.stats().pending_invalidations, 0);
        assert.equal(
          await redis.get(key),
          JSON.stringify(await loadUserGrants(db.pool, user)),
          'Redis holds the fresh grants',
        );
      } finally {
        await redis.close();
      }
    } finally {
      await cache.close();
      await front.close();
      await proxy.close();
    }
  });

  it('a read that misses its deadline drops the shared connection: only it counts, not the reads of other keys on it', async () => {
    const { proxy, front, url } = await proxiedRedis();
    const clock = new FakeClock(Date.now());
    const { cache, collections } = newCache(url, clock, `${prefix}-dropped`);
    const users = 13; // more than the threshold (10), over as many keys
    try {
      await readAll(collections, users);
      await cache.settled();
      assert.equal(cache.stats().redis.connects, 1, 'one shared connection');

      proxy.stall(); // the first read's answer never comes (as for one huge value); the others queue behind it
      const answers = await Promise.all(
        Array.from({ length: users }, (_, u) => collections.get(`user-${u}`)),
      );
      for (const [u, got] of answers.entries()) {
        assert.deepEqual(got.characters, truth.get(`user-${u}`), `user-${u} answered from PostgreSQL`);
      }
      const s = cache.stats();
      assert.equal(s.redis_errors_by_kind.timeout, 1, 'the read whose deadline fired');
      assert.equal(s.redis_errors_by_kind.dropped, users - 1, 'the others: dropped with the connection');
      assert.equal(s.redis_errors_by_kind.connection, 0, 'not connection errors');
      assert.equal(s.recent_fail_count, 1);
      assert.equal(s.breaker.recent_fail_keys, 1);
      assert.equal(s.breaker.state, 'closed', 'one slow key does not cut every key off Redis');
      assert.equal(s.fallbacks, users + users, 'the dropped reads still fell back to the database');
      assert.equal(s.alerts.suppressed_cooldown, 0, 'only the timed-out read was alerted on');
    } finally {
      proxy.restore();
      await cache.close();
      await front.close();
      await proxy.close();
    }
  });

  it('a killed redis-server: reads fail over at once, the breaker opens, and closes after a restart', async () => {
    const port = await freePort();
    let server = await startRedisServer(port);
    const clock = new FakeClock(Date.now());
    const { cache, collections } = newCache(`redis://127.0.0.1:${port}/0`, clock, prefix);
    try {
      await readAll(collections);
      await cache.settled();
      await readAll(collections);
      assert.equal(cache.stats().redis_hits, USERS);

      server.kill('SIGKILL');
      await once(server, 'exit');
      const slowest = await readAll(collections);
      assert.ok(
        slowest < COMMAND_TIMEOUT_MS + MARGIN_MS,
        `slowest read with Redis dead: ${slowest.toFixed(0)} ms`,
      );
      await cache.settled();
      assert.equal(cache.stats().is_open, true);

      server = await startRedisServer(port); // empty: --save ''
      await clock.advance(OPEN_MS);
      await readAll(collections);
      await cache.settled();
      assert.equal(cache.stats().is_open, false);
      const hits = cache.stats().redis_hits;
      await readAll(collections);
      assert.equal(cache.stats().redis_hits, hits + USERS, 'refilled and served from the new Redis');
    } finally {
      await cache.close();
      server.kill('SIGKILL');
    }
  });
});
