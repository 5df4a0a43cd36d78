// The broker layer's option normalizers and helpers (src/amqp), without a broker.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bodyBytes } from '../../src/amqp/body.ts';
import { withConfirmTimeout } from '../../src/amqp/confirm-timeout.ts';
import { normalizeAmqpConnectionOptions } from '../../src/amqp/connection.ts';
import { normalizeRabbitMQBusOptions } from '../../src/amqp/rabbitmq-bus.ts';
import { isCachecastError } from '../../src/errors.ts';
import { normalizeMatchWorkerOptions } from '../../src/services/match-worker/options.ts';
import type { MatchWorkerOptions } from '../../src/services/match-worker/options.ts';

const url = 'amqp://u:p@a:5672/v,amqp://u:p@b/v';

describe('amqp connection options', () => {
  it('has documented defaults and parses every node', () => {
    const o = normalizeAmqpConnectionOptions({ url, name: 'x' });
    assert.deepEqual(o.endpoints, { url: 'amqp://u:p@a:5672/v', hosts: ['a:5672', 'b:5672'] });
    assert.equal(o.heartbeatSec, 10);
    assert.equal(o.retryLowMs, 200);
    assert.equal(o.retryHighMs, 5000);
    assert.equal(o.connectionTimeoutMs, 5000);
    assert.equal(o.acquireTimeoutMs, 6000);
  });

  it('refuses bad options with codes', () => {
    assert.throws(
      () => normalizeAmqpConnectionOptions({ url, name: 'x', heartbeatSec: 0 }),
      (err: unknown) => isCachecastError(err, 'OPTION_RANGE') && err instanceof RangeError,
    );
    assert.throws(
      () => normalizeAmqpConnectionOptions({ url, name: 'x', retryHighMs: 'soon' as unknown as number }),
      (err: unknown) => isCachecastError(err, 'OPTION_TYPE') && err instanceof TypeError,
    );
    assert.throws(
      () => normalizeAmqpConnectionOptions({ url: 'http://a', name: 'x' }),
      (err: unknown) => isCachecastError(err, 'CONFIG_INVALID'),
    );
  });
});

describe('RabbitMQ bus options', () => {
  it('keeps the bus defaults and times out a publish before the connection does', () => {
    const o = normalizeRabbitMQBusOptions({ url, instanceId: 'i1', publishTimeoutMs: 3000 });
    assert.equal(o.instanceId, 'i1');
    assert.equal(o.connection.name, 'cachecast i1');
    assert.equal(o.connection.acquireTimeoutMs, 4000);
    assert.equal(o.queueExpiresMs, 600_000);
    assert.equal(o.prefetch, 256);
    assert.ok(normalizeRabbitMQBusOptions({ url }).instanceId.length > 0);
    assert.throws(() => normalizeRabbitMQBusOptions({ url, prefetch: 0 }), RangeError);
  });

  it('sends events persistent unless told transient, and refuses any other delivery', () => {
    assert.equal(normalizeRabbitMQBusOptions({ url }).eventDelivery, 'persistent');
    assert.equal(normalizeRabbitMQBusOptions({ url, eventDelivery: 'transient' }).eventDelivery, 'transient');
    assert.throws(() =>
      normalizeRabbitMQBusOptions({ url, eventDelivery: 'lazy' as unknown as 'transient' }),
    );
  });
});

describe('match worker options', () => {
  const base = { connection: url } as unknown as MatchWorkerOptions;
  it('has documented defaults and keeps prefetch >= concurrency', () => {
    const o = normalizeMatchWorkerOptions(base);
    assert.equal(o.concurrency, 4);
    assert.equal(o.prefetch, 16);
    assert.equal(o.resultExpiresSec, 86_400);
    assert.equal(o.publishTimeoutMs, 5000);
    assert.throws(
      () => normalizeMatchWorkerOptions({ ...base, concurrency: 8, prefetch: 4 }),
      (err: unknown) => isCachecastError(err, 'OPTION_RANGE'),
    );
  });
});

describe('amqp helpers', () => {
  it('turns any body the client handed over back into bytes', () => {
    const bytes = Buffer.from('{"a":1}');
    assert.equal(bodyBytes(bytes), bytes);
    assert.deepEqual(bodyBytes('{"a":1}'), bytes);
    assert.deepEqual(bodyBytes({ a: 1 }), bytes);
    assert.deepEqual(bodyBytes(undefined), Buffer.from('null'));
  });

  it('bounds a confirm by its timeout', async () => {
    assert.equal(await withConfirmTimeout(Promise.resolve(1), 50, () => new Error('late')), 1);
    await assert.rejects(
      withConfirmTimeout(new Promise(() => undefined), 10, () => new Error('late')),
      /late/,
    );
    await assert.rejects(
      withConfirmTimeout(Promise.reject(new Error('nack')), 50, () => new Error('late')),
      /nack/,
    );
  });
});
