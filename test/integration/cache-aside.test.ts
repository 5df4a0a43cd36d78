import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { defineCacheKeys } from '../../src/cache-aside/cache-key.ts';
import { RedisTier } from '../../src/cache-aside/redis-tier.ts';
import { CachecastError } from '../../src/errors.ts';
import { deferred } from '../../src/util/deferred.ts';
import { REDIS_URL, redisClient, uniqueName } from '../support/env.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { waitFor } from '../support/wait.ts';

const prefix = uniqueName('it.cache');
const Keys = defineCacheKeys({
  PROFILE: { template: 'profile:{user_id}', ttlMs: 60_000 },
  SETTINGS: { template: 'settings:{user_id}', ttlMs: 60_000, localTtlMs: 1000 },
  HOME: { template: 'home', ttlMs: 60_000, version: 2 },
});
const clock = new FakeClock(Date.now());
let redis: Awaited<ReturnType<typeof redisClient>>;
let cache: CacheAside;

before(async () => {
  redis = await redisClient();
  cache = new CacheAside({ redisUrl: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 1000, clock });
});
after(async () => {
  await cache.close();
  for await (const keys of redis.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
    if (keys.length > 0) await redis.del(keys);
  }
  await redis.close();
});

/** A fallback that counts its calls. */
function counted<V>(value: V | (() => V | Promise<V>)) {
  const fn = Object.assign(
    async () => {
      fn.calls++;
      return typeof value === 'function' ? await (value as () => V | Promise<V>)() : value;
    },
    { calls: 0 },
  );
  return fn;
}

describe('cache-aside against Redis', () => {
  it('misses to the fallback, writes the result back off the response path, then hits Redis', async () => {
    const profile = { name: 'Ann', level: 3, acquired: new Date(0) };
    const fallback = counted(profile);
    const first = await cache.getWithFallback(Keys.PROFILE, { user_id: 'ann' }, fallback);
    assert.deepEqual(first, { name: 'Ann', level: 3, acquired: '1970-01-01T00:00:00.000Z' }, 'stored form');
    assert.equal(fallback.calls, 1);
    await cache.settled();
    const key = `${prefix}:1:profile:ann`;
    assert.equal(await redis.get(key), JSON.stringify(profile));
    const ttl = await redis.pTTL(key);
    assert.ok(ttl > 55_000 && ttl <= 60_000, `TTL from the declaration: ${ttl}`);
    const before = cache.stats();
    const second = await cache.getWithFallback(Keys.PROFILE, { user_id: 'ann' }, fallback);
    assert.deepEqual(second, first);
    assert.equal(fallback.calls, 1, 'served from Redis');
    const stats = cache.stats();
    assert.equal(stats.redis_hits, before.redis_hits + 1);
    assert.equal(stats.hits, before.hits + 1);
    assert.equal(before.misses, 1);
    assert.equal(before.fallbacks, 1);
    assert.equal(before.write_backs, 1);
  });

  it('caches null as a value, distinct from a miss; undefined is not cached', async () => {
    const none = counted(null);
    assert.equal(await cache.getWithFallback(Keys.PROFILE, { user_id: 'nobody' }, none), null);
    await cache.settled();
    assert.equal(await redis.get(`${prefix}:1:profile:nobody`), 'null');
    const misses = cache.stats().misses;
    assert.equal(await cache.getWithFallback(Keys.PROFILE, { user_id: 'nobody' }, none), null);
    assert.equal(none.calls, 1, 'the cached null answered');
    assert.equal(cache.stats().misses, misses, 'a cached null is a hit, not a miss');

    const nothing = counted(undefined);
    assert.equal(await cache.getWithFallback(Keys.PROFILE, { user_id: 'undef' }, nothing), undefined);
    await cache.settled();
    assert.equal(await redis.exists(`${prefix}:1:profile:undef`), 0);
    await cache.getWithFallback(Keys.PROFILE, { user_id: 'undef' }, nothing);
    assert.equal(nothing.calls, 2);
  });

  it('gives every caller its own copy, whichever tier answered', async () => {
    const a = await cache.getWithFallback(Keys.SETTINGS, { user_id: 'copy' }, () => ({ tags: ['x'] }));
    a.tags.push('mutated');
    await cache.settled();
    const b = await cache.getWithFallback(Keys.SETTINGS, { user_id: 'copy' }, () => ({ tags: ['other'] }));
    assert.deepEqual(b, { tags: ['x'] });
    b.tags.push('mutated');
    const c = await cache.getWithFallback(Keys.SETTINGS, { user_id: 'copy' }, () => ({ tags: ['other'] }));
    assert.deepEqual(c, { tags: ['x'] });
  });

  it('answers from the in-process tier first, for its local TTL only', async () => {
    const key = `${prefix}:1:settings:local`;
    const fallback = counted({ theme: 'dark' });
    await cache.getWithFallback(Keys.SETTINGS, { user_id: 'local' }, fallback);
    await cache.settled();
    await redis.set(key, JSON.stringify({ theme: 'changed in redis' }));
    const memoryHits = cache.stats().memory_hits;
    assert.deepEqual(await cache.getWithFallback(Keys.SETTINGS, { user_id: 'local' }, fallback), {
      theme: 'dark',
    });
    assert.equal(cache.stats().memory_hits, memoryHits + 1, 'Redis not asked');
    await clock.advance(1000);
    assert.deepEqual(await cache.getWithFallback(Keys.SETTINGS, { user_id: 'local' }, fallback), {
      theme: 'changed in redis',
    });
    assert.equal(fallback.calls, 1);
    // Keys without localTtlMs never use the in-process tier.
    await cache.getWithFallback(Keys.HOME, {}, () => 'home v1');
    await cache.settled();
    await redis.set(`${prefix}:2:home`, JSON.stringify('home v2'));
    assert.equal(await cache.getWithFallback(Keys.HOME, {}, () => 'unused'), 'home v2');
  });

  it('makes one fallback call for 100 concurrent misses on one key (single-flight)', async () => {
    const gate = deferred();
    let calls = 0;
    const fallback = async () => {
      calls++;
      await gate.promise;
      return { rows: [1, 2, 3] };
    };
    const before = cache.stats();
    const reads = Array.from({ length: 100 }, () =>
      cache.getWithFallback(Keys.PROFILE, { user_id: 'stampede' }, fallback),
    );
    await waitFor(() => calls > 0, 'the fallback started');
    gate.resolve();
    const results = await Promise.all(reads);
    assert.equal(calls, 1, 'one fallback call for 100 concurrent misses');
    for (const r of results) assert.deepEqual(r, { rows: [1, 2, 3] });
    assert.notEqual(results[0], results[1], 'each caller has its own copy');
    const stats = cache.stats();
    assert.equal(stats.coalesced - before.coalesced, 99);
    assert.equal(stats.fallbacks - before.fallbacks, 1);
    assert.equal(stats.misses - before.misses, 1, 'one Redis read too');
  });

  it('shares a fallback error with the callers waiting on it, and caches nothing', async () => {
    const gate = deferred();
    let calls = 0;
    const failing = async () => {
      calls++;
      await gate.promise;
      throw new Error('database down');
    };
    const reads = Array.from({ length: 5 }, () =>
      cache.getWithFallback(Keys.PROFILE, { user_id: 'error' }, failing),
    );
    await waitFor(() => calls > 0, 'the fallback started');
    gate.resolve();
    for (const r of await Promise.allSettled(reads)) {
      assert.equal(r.status, 'rejected');
      assert.match(String(r.reason), /database down/);
    }
    assert.equal(calls, 1);
    await cache.settled();
    assert.equal(await redis.exists(`${prefix}:1:profile:error`), 0);
    assert.equal(await cache.getWithFallback(Keys.PROFILE, { user_id: 'error' }, () => 'back'), 'back');
  });

  it('invalidate removes the key from every tier; the next read calls the fallback', async () => {
    let version = 1;
    const load = () => ({ version });
    await cache.getWithFallback(Keys.SETTINGS, { user_id: 'inv' }, load);
    await cache.settled();
    version = 2;
    assert.deepEqual(await cache.getWithFallback(Keys.SETTINGS, { user_id: 'inv' }, load), { version: 1 });
    assert.equal(await cache.invalidate(Keys.SETTINGS, { user_id: 'inv' }), true);
    assert.equal(await redis.exists(`${prefix}:1:settings:inv`), 0);
    assert.deepEqual(
      await cache.getWithFallback(Keys.SETTINGS, { user_id: 'inv' }, load),
      { version: 2 },
      'not from the in-process tier either',
    );
    // Many at once, in one call.
    await cache.getWithFallback(Keys.PROFILE, { user_id: 'm1' }, () => 1);
    await cache.getWithFallback(Keys.PROFILE, { user_id: 'm2' }, () => 2);
    await cache.settled();
    assert.equal(await cache.invalidateMany(Keys.PROFILE, [{ user_id: 'm1' }, { user_id: 'm2' }]), true);
    assert.equal(await redis.exists([`${prefix}:1:profile:m1`, `${prefix}:1:profile:m2`]), 0);
  });

  it('invalidateMany skips a parameter set that builds no key and invalidates the rest', async () => {
    for (const id of ['b1', 'b2']) await cache.getWithFallback(Keys.PROFILE, { user_id: id }, () => 'old');
    await cache.settled();
    const before = cache.stats().invalidations_bad_key;
    // A lone surrogate (as JSON can carry it) in the middle of the batch.
    assert.equal(
      await cache.invalidateMany(Keys.PROFILE, [
        { user_id: 'b1' },
        { user_id: 'bad\ud800' },
        { user_id: 'b2' },
      ]),
      true,
    );
    assert.equal(cache.stats().invalidations_bad_key, before + 1);
    assert.equal(await redis.exists([`${prefix}:1:profile:b1`, `${prefix}:1:profile:b2`]), 0);
    assert.equal(await cache.getWithFallback(Keys.PROFILE, { user_id: 'b2' }, () => 'new'), 'new');
    assert.equal(
      await cache.invalidateMany(Keys.PROFILE, [{ user_id: '' }]),
      true,
      'nothing valid: nothing to do',
    );
    await assert.rejects(
      cache.getWithFallback(Keys.PROFILE, { user_id: 'bad\ud800' }, () => 1),
      (err: unknown) => (err as { code?: string }).code === 'CACHE_BAD_KEY',
      'a read refuses it the same way',
    );
  });

  it('a write-back in flight when an invalidation is remembered does not settle it (no stale value after the outage)', async () => {
    // The write-back's SET is slow (but succeeds); reads of "fail*" keys time out, opening the breaker.
    const gate = deferred();
    const setDescriptor = Object.getOwnPropertyDescriptor(RedisTier.prototype, 'set')!;
    const getDescriptor = Object.getOwnPropertyDescriptor(RedisTier.prototype, 'get')!;
    const originalSet = setDescriptor.value as RedisTier['set'];
    const originalGet = getDescriptor.value as RedisTier['get'];
    RedisTier.prototype.set = async function (this: RedisTier, key: string, value: string, ttlMs: number) {
      if (key.includes(':stale')) await gate.promise;
      return originalSet.call(this, key, value, ttlMs);
    };
    RedisTier.prototype.get = async function (this: RedisTier, key: string) {
      if (key.includes(':fail')) throw new CachecastError('CACHE_TIMEOUT', 'simulated');
      return originalGet.call(this, key);
    };
    const ownClock = new FakeClock(Date.now());
    const own = new CacheAside({
      redisUrl: REDIS_URL,
      keyPrefix: prefix,
      commandTimeoutMs: 1000,
      clock: ownClock,
      breaker: { failureThreshold: 2, openMs: 1000 },
    });
    const key = `${prefix}:1:profile:stale`;
    try {
      // A lookup reads the old row; its write-back SET is sent.
      assert.equal(await own.getWithFallback(Keys.PROFILE, { user_id: 'stale' }, () => 'old'), 'old');
      await own.getWithFallback(Keys.PROFILE, { user_id: 'fail1' }, () => 1);
      await own.getWithFallback(Keys.PROFILE, { user_id: 'fail2' }, () => 1);
      assert.equal(own.stats().breaker.state, 'open');
      // The writer commits "new" and invalidates: the breaker is open, so the delete is remembered.
      assert.equal(await own.invalidate(Keys.PROFILE, { user_id: 'stale' }), false);
      assert.equal(own.stats().pending_invalidations, 1);
      gate.resolve(); // the old SET lands after the invalidation
      await own.settled();
      assert.equal(await redis.get(key), '"old"');
      assert.equal(
        own.stats().pending_invalidations,
        1,
        'the late SET did not settle the newer invalidation',
      );

      await ownClock.advance(1000);
      assert.equal(
        await own.getWithFallback(Keys.PROFILE, { user_id: 'stale' }, () => 'new'),
        'new',
        'the old value is deleted before it is read',
      );
      await own.settled();
      assert.equal(own.stats().breaker.state, 'closed');
      assert.equal(own.stats().pending_invalidations, 0, 'settled by the DEL, then by the fresh write-back');
      assert.equal(await redis.get(key), '"new"');
    } finally {
      Object.defineProperty(RedisTier.prototype, 'set', setDescriptor);
      Object.defineProperty(RedisTier.prototype, 'get', getDescriptor);
      gate.resolve();
      await own.close();
    }
  });

  it('a lookup overtaken by an invalidation neither serves later readers nor caches its stale result', async () => {
    const slow = deferred<string>();
    const stale = cache.getWithFallback(Keys.SETTINGS, { user_id: 'race' }, () => slow.promise);
    await waitFor(() => cache.stats().fallbacks > 0, 'the first lookup reached its fallback', 5000);
    // The writer commits, then invalidates, while the first lookup still holds the old row.
    await cache.invalidate(Keys.SETTINGS, { user_id: 'race' });
    const fresh = await cache.getWithFallback(Keys.SETTINGS, { user_id: 'race' }, () => 'new');
    assert.equal(fresh, 'new', 'a reader after the invalidation does not join the old lookup');
    slow.resolve('old');
    assert.equal(await stale, 'old', 'the first caller still gets its answer');
    await cache.settled();
    assert.equal(
      await redis.get(`${prefix}:1:settings:race`),
      '"new"',
      'the stale result was not written back',
    );
    assert.equal(
      await cache.getWithFallback(Keys.SETTINGS, { user_id: 'race' }, () => 'unused'),
      'new',
      'nor put in the in-process tier',
    );
  });

  it('replaces a value that is not JSON, and the caller never sees the problem', async () => {
    const key = `${prefix}:1:profile:corrupt`;
    await redis.set(key, '{not json');
    assert.deepEqual(await cache.getWithFallback(Keys.PROFILE, { user_id: 'corrupt' }, () => ({ ok: 1 })), {
      ok: 1,
    });
    await cache.settled();
    assert.equal(await redis.get(key), '{"ok":1}');
    assert.equal(cache.stats().corrupt_values, 1);
    assert.equal(cache.stats().is_open, false);
    assert.equal(cache.stats().recent_fail_count, 0, 'not a breaker failure');
  });

  it('wraps a function and keeps its signature (the seed decorator)', async () => {
    const calls: Array<[string, number]> = [];
    const loadProfile = (userId: string, level: number): Promise<{ id: string; level: number }> => {
      calls.push([userId, level]);
      return Promise.resolve({ id: userId, level });
    };
    const cached = cache.wrap(Keys.PROFILE, (userId: string) => ({ user_id: userId }), loadProfile);
    const typed: (userId: string, level: number) => Promise<{ id: string; level: number }> = cached;
    assert.deepEqual(await typed('w1', 5), { id: 'w1', level: 5 });
    await cache.settled();
    assert.deepEqual(await cached('w1', 9), { id: 'w1', level: 5 }, 'the key is built from user_id only');
    assert.deepEqual(calls, [['w1', 5]]);
    // @ts-expect-error the wrapped function keeps its parameter types
    const _wrongTypes = () => cached(1, 2);
    // @ts-expect-error and its arity
    const _missing = () => cached('w1');
  });

  it('refuses bad key parameters before touching anything', async () => {
    await assert.rejects(
      cache.getWithFallback(Keys.PROFILE, { user_id: '' }, () => 1),
      (err: unknown) => (err as { code?: string }).code === 'CACHE_BAD_KEY',
    );
  });

  it('close() drains the write-backs in flight, is idempotent, and later reads go to the fallback', async () => {
    const own = new CacheAside({ redisUrl: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 1000 });
    await own.getWithFallback(Keys.PROFILE, { user_id: 'drain' }, () => 'drained');
    await Promise.all([own.close(), own.close()]);
    assert.equal(await redis.get(`${prefix}:1:profile:drain`), '"drained"', 'written before close resolved');
    assert.equal(own.pendingWork, 0);
    const after = counted('direct');
    assert.equal(await own.getWithFallback(Keys.PROFILE, { user_id: 'drain' }, after), 'direct');
    assert.equal(after.calls, 1);
    assert.equal(await own.invalidate(Keys.PROFILE, { user_id: 'drain' }), false);
  });
});

describe('cache-aside Redis tier: connections', () => {
  it('close() while a connection is being opened leaves no connection behind', async () => {
    const clientName = uniqueName('tier-connecting');
    const tier = new RedisTier({ url: REDIS_URL, commandTimeoutMs: 1000, clientName });
    // The read opens a connection; close() comes before its socket has connected (as a SIGTERM
    // right after a write-back began). node-redis's destroy() misses a socket not connected yet:
    // it then connects, and stays open for good, keeping a closed service's process alive.
    const read = tier.get('never-read');
    await tier.close();
    await assert.rejects(read, (err: unknown) => (err as { code?: string }).code === 'CACHE_CONNECT_FAILED');
    await waitFor(
      async () => !(await redis.clientList()).some((c) => c.name === clientName),
      `no connection named ${clientName} left on Redis`,
      5000,
      50,
    );
  });
});
