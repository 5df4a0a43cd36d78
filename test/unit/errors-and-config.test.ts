import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseAmqpUrls } from '../../src/amqp/url.ts';
import { intVar, loadCommonConfig, matchQueueType } from '../../src/config/env.ts';
import { urlCredentials } from '../../src/redis/target.ts';
import { CachecastError, describeError, isCachecastError, OptionRangeError } from '../../src/errors.ts';
import { normalizeReplicaOptions } from '../../src/replica/options.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import { backoffDelay } from '../../src/util/backoff.ts';
import { redactUrl } from '../../src/util/redact.ts';

describe('configuration', () => {
  it('has a local default for every variable', () => {
    const config = loadCommonConfig({});
    assert.equal(config.rabbitmqUrl, 'amqp://guest:guest@127.0.0.1:5672/');
    assert.equal(config.redisUrl, 'redis://127.0.0.1:6379/0');
    assert.equal(config.databaseUrl, 'postgres://postgres@127.0.0.1:5432/postgres');
    assert.equal(config.logLevel, 'info');
    assert.equal(config.eventSecret, undefined);
  });

  it('names the bad variable and never echoes a password', () => {
    assert.throws(
      () => loadCommonConfig({ DATABASE_URL: 'mysql://u:hunter2@db/x' }),
      (err: unknown) =>
        isCachecastError(err, 'CONFIG_INVALID') &&
        /DATABASE_URL/.test(err.message) &&
        !err.message.includes('hunter2'),
    );
    assert.throws(
      () => loadCommonConfig({ REDIS_URL: 'not a url :hunter2' }),
      (err: unknown) => isCachecastError(err, 'CONFIG_INVALID') && !err.message.includes('hunter2'),
    );
    assert.throws(() => loadCommonConfig({ LOG_LEVEL: 'loud' }), /LOG_LEVEL/);
    assert.throws(() => loadCommonConfig({ CACHE_EVENT_SECRET: 'short' }), /CACHE_EVENT_SECRET/);
    assert.throws(() => intVar({ X: '1.5' }, 'X', 1, 0, 10), /X must be an integer from 0 to 10/);
    assert.throws(() => intVar({ X: '11' }, 'X', 1, 0, 10), /X must be/);
    assert.equal(intVar({ X: ' 7 ' }, 'X', 1, 0, 10), 7);
    assert.equal(intVar({}, 'X', 1, 0, 10), 1);
  });

  it('parses several RabbitMQ nodes and refuses nodes that disagree', () => {
    assert.deepEqual(parseAmqpUrls('amqp://u:p@a:5672/v, amqp://u:p@b:5673/v,amqp://u:p@c/v'), {
      url: 'amqp://u:p@a:5672/v',
      hosts: ['a:5672', 'b:5673', 'c:5672'],
    });
    assert.deepEqual(parseAmqpUrls('amqps://u:p@a/v').hosts, ['a:5671']);
    assert.throws(
      () => parseAmqpUrls('amqp://u:p@a/v,amqp://u:other@b/v'),
      (err: unknown) => {
        return isCachecastError(err, 'CONFIG_INVALID') && !err.message.includes('other');
      },
    );
    assert.throws(() => parseAmqpUrls('http://a/'), /amqp/);
    assert.throws(() => parseAmqpUrls(' , '), /empty/);
  });

  it('reads Sentinels, the queue types and refuses what it cannot use', () => {
    const plain = loadCommonConfig({});
    assert.deepEqual(plain.redis, { url: 'redis://127.0.0.1:6379/0' });
    assert.equal(plain.eventQueueType, 'classic');
    assert.equal(matchQueueType({}), 'classic');
    const sentinel = loadCommonConfig({
      REDIS_URL: 'redis://:pw@ignored:1/3',
      REDIS_SENTINELS: 's1:26379, 10.0.0.2:26380,[::1]:26381',
      REDIS_SENTINEL_NAME: 'cache-1',
      EVENT_QUEUE_TYPE: 'quorum',
    });
    assert.deepEqual(sentinel.redis, {
      url: 'redis://:pw@ignored:1/3',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      sentinelName: 'cache-1',
    });
    assert.deepEqual(urlCredentials(sentinel.redis.url), {
      database: 3,
      username: undefined,
      password: 'pw',
      tls: false,
    });
    assert.equal(sentinel.eventQueueType, 'quorum');
    assert.equal(matchQueueType({ MATCH_QUEUE_TYPE: 'quorum' }), 'quorum');
    for (const bad of ['s1', 's1:0', 's1:70000', 'a b:1', ',']) {
      assert.throws(
        () => loadCommonConfig({ REDIS_SENTINELS: bad }),
        (err: unknown) => isCachecastError(err, 'CONFIG_INVALID') && /REDIS_SENTINELS/.test(err.message),
        bad,
      );
    }
    assert.throws(() => loadCommonConfig({ REDIS_SENTINEL_NAME: 'a b' }), /REDIS_SENTINEL_NAME/);
    assert.throws(() => loadCommonConfig({ EVENT_QUEUE_TYPE: 'stream' }), /EVENT_QUEUE_TYPE/);
    assert.throws(() => matchQueueType({ MATCH_QUEUE_TYPE: 'mirrored' }), /MATCH_QUEUE_TYPE/);
  });

  it('redacts passwords in URLs, even unparsable ones', () => {
    assert.equal(redactUrl('postgres://u:secret@h:5432/db'), 'postgres://u:***@h:5432/db');
    assert.equal(redactUrl('redis://h:6379'), 'redis://h:6379');
    assert.equal(redactUrl('amqp://u:sec ret@'), 'amqp://<unparsable>');
  });
});

describe('options', () => {
  const base = () => ({
    dataset: catalogDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source: new MemorySource<Character>(),
  });

  it('fills documented defaults once', () => {
    const o = normalizeReplicaOptions(base());
    assert.equal(o.versionCheckIntervalMs, 30_000);
    assert.equal(o.degradedReads, 'serve');
    assert.equal(o.maxEventBytes, 64 * 1024 * 1024);
    assert.equal(o.eventSecret, undefined);
  });

  it('range-checks at construction', () => {
    assert.throws(() => normalizeReplicaOptions({ ...base(), versionCheckIntervalMs: -1 }), RangeError);
    assert.throws(
      () => normalizeReplicaOptions({ ...base(), resyncRetryBaseMs: 100, resyncRetryMaxMs: 10 }),
      RangeError,
    );
    assert.throws(
      () => normalizeReplicaOptions({ ...base(), degradedReads: 'maybe' as 'serve' }),
      RangeError,
    );
  });

  it('throws option errors that carry stable codes', () => {
    assert.throws(
      () => normalizeReplicaOptions({ ...base(), gapWaitMs: -5 }),
      (err: unknown) =>
        err instanceof RangeError && isCachecastError(err, 'OPTION_RANGE') && /gapWaitMs/.test(err.message),
    );
    assert.throws(
      () => normalizeReplicaOptions({ ...base(), sweepBatch: 1.5 }),
      (err: unknown) => err instanceof TypeError && isCachecastError(err, 'OPTION_TYPE'),
    );
    assert.throws(
      () => normalizeReplicaOptions({ ...base(), maxStalenessMs: 2 ** 31 }),
      (err: unknown) => isCachecastError(err, 'OPTION_RANGE'),
    );
    assert.equal(describeError(new OptionRangeError('x must be 1')), 'OPTION_RANGE: x must be 1');
  });
});

describe('errors and backoff', () => {
  it('carry stable codes', () => {
    const err = new CachecastError('BUS_CLOSED', 'closed');
    assert.equal(err.code, 'BUS_CLOSED');
    assert.ok(isCachecastError(err, 'BUS_CLOSED'));
    assert.ok(!isCachecastError(err, 'BUS_PUBLISH_TIMEOUT'));
    assert.equal(describeError(err), 'BUS_CLOSED: closed');
    assert.equal(
      describeError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })),
      'ECONNREFUSED: refused',
    );
  });

  it('backs off exponentially with jitter inside [base, cap]', () => {
    assert.equal(
      backoffDelay(0, 100, 5000, () => 0),
      100,
    );
    assert.equal(
      backoffDelay(3, 100, 5000, () => 1),
      800,
    );
    assert.equal(
      backoffDelay(20, 100, 5000, () => 1),
      5000,
    );
    assert.equal(
      backoffDelay(20, 100, 5000, () => 0),
      100,
    );
  });
});
