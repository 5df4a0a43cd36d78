import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildCacheKey, defineCacheKeys } from '../../src/cache-aside/cache-key.ts';
import { CacheKey } from '../../src/services/cache-keys.ts';
import { MemoryTier } from '../../src/cache-aside/memory-tier.ts';
import { loadCacheAsideConfig, normalizeCacheAsideOptions } from '../../src/cache-aside/options.ts';
import { SingleFlight } from '../../src/cache-aside/single-flight.ts';
import { isCachecastError } from '../../src/errors.ts';
import { deferred } from '../../src/util/deferred.ts';
import { FakeClock } from '../support/fake-clock.ts';

describe('cache keys: declared once, built from the declaration', () => {
  const Keys = defineCacheKeys({
    USER_OBJECT: { template: 'user:{user_id}', ttlMs: 60_000 },
    ORDER_LINE: { template: 'orders:{order_id}:lines:{line}', ttlMs: 1000, version: 3, localTtlMs: 500 },
    HOME_BAROLIVE: { template: 'home:barolive', ttlMs: 5000, version: 2 },
  });

  it('names each key after its declaration and applies the defaults', () => {
    assert.equal(Keys.USER_OBJECT.name, 'USER_OBJECT');
    assert.equal(Keys.USER_OBJECT.version, 1);
    assert.equal(Keys.USER_OBJECT.localTtlMs, 0);
    assert.deepEqual(Keys.ORDER_LINE.params, ['order_id', 'line']);
    assert.ok(Object.isFrozen(Keys) && Object.isFrozen(Keys.ORDER_LINE));
    assert.equal(CacheKey.USER_CHARACTERS.name, 'USER_CHARACTERS');
    assert.equal(
      CacheKey.USER_CHARACTERS.localTtlMs,
      0,
      'no in-process tier for data other instances change',
    );
  });

  it('builds <prefix>:<version>:<template> with every parameter encoded', () => {
    assert.equal(buildCacheKey('cc', Keys.USER_OBJECT, { user_id: 'u-1' }), 'cc:1:user:u-1');
    assert.equal(
      buildCacheKey('cc', Keys.ORDER_LINE, { order_id: 7, line: 'a b' }),
      'cc:3:orders:7:lines:a%20b',
    );
    assert.equal(buildCacheKey('cc', Keys.HOME_BAROLIVE, {}), 'cc:2:home:barolive');
    // A parameter cannot forge another key's segments.
    assert.equal(buildCacheKey('cc', Keys.USER_OBJECT, { user_id: 'x:1:home' }), 'cc:1:user:x%3A1%3Ahome');
    assert.notEqual(
      buildCacheKey('cc', Keys.ORDER_LINE, { order_id: 'a:lines:b', line: 'c' }),
      buildCacheKey('cc', Keys.ORDER_LINE, { order_id: 'a', line: 'b:lines:c' }),
    );
    assert.equal(
      buildCacheKey('cc', CacheKey.USER_CHARACTERS, { user_id: '사용자' }),
      'cc:1:users:%EC%82%AC%EC%9A%A9%EC%9E%90:characters',
    );
  });

  it('refuses missing, unknown, empty and oversized parameters with CACHE_BAD_KEY', () => {
    const bad: unknown[] = [
      {},
      { user_id: '' },
      { user_id: 'x'.repeat(3000) },
      { user_id: null },
      { user_id: NaN },
    ];
    for (const params of bad) {
      assert.throws(
        () => buildCacheKey('cc', Keys.USER_OBJECT, params as { user_id: string }),
        (err: unknown) => isCachecastError(err, 'CACHE_BAD_KEY'),
        JSON.stringify(params),
      );
    }
    assert.throws(
      () =>
        buildCacheKey('cc', Keys.USER_OBJECT, { user_id: 'a', extra: 1 } as unknown as { user_id: string }),
      /no parameter "extra"/,
    );
    // A lone surrogate (JSON can carry "\ud800") has no UTF-8 form: CACHE_BAD_KEY, not a URIError.
    for (const user_id of ['bad\ud800', '\udc00', 'a\ud83d', '\ude00b']) {
      assert.throws(
        () => buildCacheKey('cc', Keys.USER_OBJECT, { user_id }),
        (err: unknown) => isCachecastError(err, 'CACHE_BAD_KEY') && /lone UTF-16 surrogate/.test(err.message),
        JSON.stringify(user_id),
      );
    }
    assert.equal(
      buildCacheKey('cc', Keys.USER_OBJECT, { user_id: 'a\ud83d\ude00' }),
      'cc:1:user:a%F0%9F%98%80',
      'a well-formed pair is one character',
    );
    // Compile-time checks: a wrong or missing parameter does not type-check.
    // @ts-expect-error user_id is required
    assert.throws(() => buildCacheKey('cc', Keys.USER_OBJECT, {}));
    // @ts-expect-error userId is not the template's parameter
    assert.throws(() => buildCacheKey('cc', Keys.USER_OBJECT, { userId: 'u' }));
  });

  it('refuses bad declarations at definition time', () => {
    const cases: Array<[Record<string, { template: string; ttlMs: number; version?: number }>, RegExp]> = [
      [{ lower: { template: 'a', ttlMs: 1 } }, /UPPER_SNAKE_CASE/],
      [{ A: { template: 'a:{x}:{x}', ttlMs: 1 } }, /twice/],
      [{ A: { template: 'a:{X-1}', ttlMs: 1 } }, /bad parameter/],
      [{ A: { template: 'a:{x', ttlMs: 1 } }, /unbalanced/],
      [{ A: { template: '', ttlMs: 1 } }, /template/],
      [{ A: { template: 'a b', ttlMs: 1 } }, /whitespace/],
      [{ A: { template: 'a', ttlMs: 0 } }, /ttlMs/],
      [{ A: { template: 'a', ttlMs: 1, version: 0 } }, /version/],
      [
        { A: { template: 'u:{id}', ttlMs: 1 }, B: { template: 'u:{user}', ttlMs: 1 } },
        /A and B would build the same keys|B and A would build the same keys/,
      ],
    ];
    for (const [specs, message] of cases) assert.throws(() => defineCacheKeys(specs), message);
    // Same template, another version: distinct keys, allowed.
    defineCacheKeys({ A: { template: 'u:{id}', ttlMs: 1 }, B: { template: 'u:{id}', ttlMs: 1, version: 2 } });
  });
});

describe('in-process tier', () => {
  it('expires entries on the injected clock and evicts the least recently used', async () => {
    const clock = new FakeClock();
    const tier = new MemoryTier(2, clock);
    tier.set('a', '1', 1000);
    tier.set('b', '2', 5000);
    await clock.advance(999);
    assert.equal(tier.get('a'), '1');
    await clock.advance(1);
    assert.equal(tier.get('a'), undefined, 'expired at its TTL');
    tier.set('a', '1', 5000);
    assert.equal(tier.get('b'), '2'); // b is now the most recently used
    tier.set('c', '3', 5000);
    assert.equal(tier.get('a'), undefined, 'a was least recently used');
    assert.equal(tier.get('b'), '2');
    assert.equal(tier.evictions, 1);
    tier.set('z', '0', 0);
    assert.equal(tier.get('z'), undefined, 'a TTL of 0 stores nothing');
  });
});

describe('single flight', () => {
  it('shares one call among concurrent callers, and starts afresh after detach', async () => {
    const flights = new SingleFlight<number>();
    let calls = 0;
    const gate = deferred<number>();
    const fn = () => {
      calls++;
      return gate.promise;
    };
    const first = flights.run('k', fn);
    const second = flights.run('k', fn);
    assert.equal(first.joined, false);
    assert.equal(second.joined, true);
    assert.equal(first.flight, second.flight);
    flights.detach('k');
    assert.equal(first.flight.detached, true, 'the running flight knows it was overtaken');
    const third = flights.run('k', () => Promise.resolve(7));
    assert.equal(third.joined, false);
    gate.resolve(1);
    assert.equal(await first.flight.promise, 1);
    assert.equal(await third.flight.promise, 7);
    assert.equal(calls, 1);
    assert.equal(flights.size, 0);
    const failing = flights.run('e', () => {
      throw new Error('sync throw');
    });
    await assert.rejects(failing.flight.promise, /sync throw/);
    assert.equal(flights.size, 0, 'errors are not kept');
  });
});

describe('cache-aside configuration', () => {
  it('has the defaults of CONTRACT.md', () => {
    const config = loadCacheAsideConfig({});
    assert.deepEqual(config.breaker, { failureThreshold: 10, failureWindowMs: 60_000, openMs: 180_000 });
    assert.equal(config.alertCooldownMs, 600_000);
    assert.equal(config.commandTimeoutMs, 100);
    assert.equal(config.slackWebhookUrl, undefined);
  });

  it('reads every variable and refuses bad values without echoing the webhook', () => {
    const config = loadCacheAsideConfig({
      CACHE_BREAKER_THRESHOLD: '3',
      CACHE_BREAKER_WINDOW_MS: '1000',
      CACHE_BREAKER_OPEN_MS: '2000',
      ALERT_COOLDOWN_MS: '0',
      CACHE_COMMAND_TIMEOUT_MS: '50',
      SLACK_WEBHOOK_URL: 'https://hooks.slack.com/services/T000/B000/secretsecret',
    });
    assert.deepEqual(config.breaker, { failureThreshold: 3, failureWindowMs: 1000, openMs: 2000 });
    assert.equal(config.alertCooldownMs, 0);
    assert.equal(config.commandTimeoutMs, 50);
    assert.equal(config.slackWebhookUrl, 'https://hooks.slack.com/services/T000/B000/secretsecret');
    for (const [name, value] of [
      ['CACHE_BREAKER_THRESHOLD', '0'],
      ['CACHE_BREAKER_WINDOW_MS', 'soon'],
      ['CACHE_BREAKER_OPEN_MS', '-1'],
      ['ALERT_COOLDOWN_MS', '1.5'],
      ['CACHE_COMMAND_TIMEOUT_MS', '0'],
    ] as const) {
      assert.throws(() => loadCacheAsideConfig({ [name]: value }), new RegExp(name));
    }
    for (const url of [
      'not a url secretsecret',
      'ftp://hooks.example/secretsecret',
      'javascript:secretsecret',
    ]) {
      assert.throws(
        () => loadCacheAsideConfig({ SLACK_WEBHOOK_URL: url }),
        (err: unknown) =>
          isCachecastError(err, 'CONFIG_INVALID') &&
          /SLACK_WEBHOOK_URL/.test(err.message) &&
          !err.message.includes('secretsecret'),
      );
    }
  });

  it('checks options at construction', () => {
    assert.throws(() => normalizeCacheAsideOptions({ redisUrl: '' }), TypeError);
    assert.throws(() => normalizeCacheAsideOptions({ redisUrl: 'redis://x', keyPrefix: 'a b' }), TypeError);
    assert.throws(
      () => normalizeCacheAsideOptions({ redisUrl: 'redis://x', commandTimeoutMs: 0 }),
      RangeError,
    );
    assert.throws(
      () => normalizeCacheAsideOptions({ redisUrl: 'redis://x', breaker: { failureThreshold: 0 } }),
      RangeError,
    );
    const resolved = normalizeCacheAsideOptions({ redisUrl: 'redis://x' });
    assert.equal(resolved.keyPrefix, 'cachecast');
    assert.equal(resolved.commandTimeoutMs, 100);
  });
});
