import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  ErrorReply,
  SocketClosedUnexpectedlyError,
  TimeoutError,
} from 'redis';
import type { BreakerPermit, BreakerTransition } from '../../src/cache-aside/breaker.ts';
import { CircuitBreaker } from '../../src/cache-aside/breaker.ts';
import type { RedisErrorKind } from '../../src/cache-aside/redis-errors.ts';
import { classifyRedisError } from '../../src/cache-aside/redis-errors.ts';
import { CachecastError } from '../../src/errors.ts';
import { FakeClock } from '../support/fake-clock.ts';

const WINDOW = 60_000;
const OPEN = 180_000;

function setup(settings: { failureThreshold?: number; failureWindowMs?: number; openMs?: number } = {}) {
  const clock = new FakeClock();
  const transitions: BreakerTransition[] = [];
  const breaker = new CircuitBreaker({
    failureThreshold: 10,
    failureWindowMs: WINDOW,
    openMs: OPEN,
    ...settings,
    clock,
    onTransition: (t) => transitions.push(t),
  });
  return { clock, breaker, transitions };
}

/** One call that fails with `kind` under `key`; the breaker must have allowed it. */
function fail(breaker: CircuitBreaker, key: string, kind: RedisErrorKind = 'connection'): boolean {
  const permit = breaker.acquire();
  assert.ok(permit, 'the breaker allowed the call');
  return permit.failure(key, kind);
}

/** n failures alternating over `keys`. */
function failMany(breaker: CircuitBreaker, n: number, keys: string[] = ['k1', 'k2']): void {
  for (let i = 0; i < n; i++) fail(breaker, keys[i % keys.length]!);
}

describe('circuit breaker (seed 003 policy, fake clock)', () => {
  it('opens at the threshold of failures within the window, not before', () => {
    const { breaker, transitions } = setup();
    failMany(breaker, 9);
    assert.equal(breaker.state.kind, 'closed');
    assert.equal(breaker.stats().recent_fail_count, 9);
    assert.ok(breaker.acquire(), 'still calling Redis at 9 failures');
    fail(breaker, 'k3');
    assert.equal(breaker.state.kind, 'open');
    assert.equal(breaker.acquire(), null, 'no call while open');
    assert.deepEqual(
      transitions.map((t) => [t.from, t.to, t.reason]),
      [['closed', 'open', 'threshold']],
    );
    const stats = breaker.stats();
    assert.equal(stats.is_open, true);
    assert.equal(stats.recent_fail_count, 10);
    assert.equal(stats.failure_threshold, 10);
    assert.equal(stats.failure_window_size, 60);
    assert.equal(stats.timeout, 180);
    assert.equal(stats.times_opened, 1);
  });

  it('opens only when the failures span more than one cache key', () => {
    const { breaker } = setup();
    failMany(breaker, 50, ['hot-key']);
    assert.equal(breaker.state.kind, 'closed', 'one bad key never opens the breaker');
    assert.equal(breaker.stats().recent_fail_keys, 1);
    fail(breaker, 'another-key');
    assert.equal(breaker.state.kind, 'open', 'a second key with the threshold reached opens it');
  });

  it('drops failures older than the window', async () => {
    const { clock, breaker } = setup();
    failMany(breaker, 9);
    await clock.advance(WINDOW);
    assert.equal(breaker.stats().recent_fail_count, 0, 'a window later, none of them count');
    fail(breaker, 'k1');
    assert.equal(breaker.state.kind, 'closed');
    assert.equal(breaker.stats().recent_fail_count, 1);
  });

  it('counts failures still inside the window, however close to its edge', async () => {
    const { clock, breaker } = setup();
    failMany(breaker, 9);
    await clock.advance(WINDOW - 1);
    fail(breaker, 'k3');
    assert.equal(breaker.state.kind, 'open');
  });

  it('counts only connection, timeout, out-of-memory and cluster-down errors', () => {
    const { breaker } = setup({ failureThreshold: 2 });
    const uncounted: unknown[] = [
      new ErrorReply('WRONGTYPE Operation against a key holding the wrong kind of value'),
      new ErrorReply('ERR syntax error'),
      new ErrorReply('READONLY You cannot write against a read only replica.'),
      new SyntaxError('Unexpected token'),
      new CachecastError('CACHE_CORRUPT_VALUE', 'not JSON'),
      new Error('something else'),
      'a string',
    ];
    for (const [i, err] of uncounted.entries()) {
      assert.equal(classifyRedisError(err), 'other', String(err));
      assert.equal(fail(breaker, `k${i}`, classifyRedisError(err)), false);
    }
    assert.equal(breaker.stats().recent_fail_count, 0);
    assert.equal(breaker.stats().last_failure_time, null);
    assert.equal(breaker.state.kind, 'closed');

    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    const counted: Array<[unknown, RedisErrorKind]> = [
      [refused, 'connection'],
      [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'connection'],
      [new SocketClosedUnexpectedlyError(), 'connection'],
      [new ClientClosedError(), 'connection'],
      [new ClientOfflineError(), 'connection'],
      [new ConnectionTimeoutError(), 'connection'],
      [new CachecastError('CACHE_CONNECT_FAILED', 'cannot connect'), 'connection'],
      [new ErrorReply('LOADING Redis is loading the dataset in memory'), 'connection'],
      [new ErrorReply('NOAUTH Authentication required.'), 'connection'],
      [new TimeoutError(), 'timeout'],
      [new CachecastError('CACHE_TIMEOUT', 'no answer'), 'timeout'],
      [new ErrorReply("OOM command not allowed when used memory > 'maxmemory'."), 'out_of_memory'],
      [new ErrorReply('CLUSTERDOWN The cluster is down'), 'cluster_down'],
    ];
    for (const [err, kind] of counted) assert.equal(classifyRedisError(err), kind, String(err));
    assert.equal(fail(breaker, 'a', 'out_of_memory'), true);
    assert.equal(fail(breaker, 'b', 'cluster_down'), true);
    assert.equal(breaker.state.kind, 'open');
  });

  it('stays open for openMs, then lets exactly one trial call through', async () => {
    const { clock, breaker, transitions } = setup();
    failMany(breaker, 10);
    await clock.advance(OPEN - 1);
    assert.equal(breaker.acquire(), null, 'still open a millisecond before openMs');
    assert.equal(breaker.refusing, true);
    await clock.advance(1);
    assert.equal(breaker.refusing, false);
    const trial = breaker.acquire();
    assert.ok(trial?.trial, 'the first caller after openMs gets the trial');
    assert.equal(breaker.state.kind, 'half_open');
    assert.equal(breaker.acquire(), null, 'no second call while the trial is out');
    assert.equal(breaker.stats().is_open, true);
    assert.deepEqual(
      transitions.map((t) => t.to),
      ['open', 'half_open'],
    );
  });

  it('closes when the trial succeeds, and the failure count starts over', async () => {
    const { clock, breaker, transitions } = setup();
    failMany(breaker, 10);
    await clock.advance(OPEN);
    breaker.acquire()!.success();
    assert.equal(breaker.state.kind, 'closed');
    assert.equal(breaker.stats().recent_fail_count, 0);
    assert.equal(transitions.at(-1)?.reason, 'trial_succeeded');
    failMany(breaker, 9);
    assert.equal(breaker.state.kind, 'closed', 'the old failures no longer count');
  });

  it('opens again for another openMs when the trial fails', async () => {
    const { clock, breaker, transitions } = setup();
    failMany(breaker, 10);
    await clock.advance(OPEN);
    const trial = breaker.acquire()!;
    assert.equal(trial.failure('k1', 'timeout'), true);
    assert.equal(breaker.state.kind, 'open');
    assert.equal(transitions.at(-1)?.reason, 'trial_failed');
    await clock.advance(OPEN - 1);
    assert.equal(breaker.acquire(), null, 'a full openMs again');
    await clock.advance(1);
    assert.ok(breaker.acquire()?.trial);
    assert.equal(breaker.stats().times_opened, 1, 'a failed trial is the same outage');
  });

  it('closes when the trial gets an uncounted error: Redis answered', async () => {
    const { clock, breaker } = setup();
    failMany(breaker, 10);
    await clock.advance(OPEN);
    assert.equal(breaker.acquire()!.failure('k1', 'other'), false);
    assert.equal(breaker.state.kind, 'closed');
  });

  it("a dropped call (its connection cut for another call's deadline) never counts; a dropped trial is handed on", async () => {
    const { clock, breaker, transitions } = setup({ failureThreshold: 2 });
    const dropped = new CachecastError('CACHE_CONNECTION_DROPPED', 'dropped');
    assert.equal(classifyRedisError(dropped), 'dropped');
    for (let i = 0; i < 5; i++) assert.equal(fail(breaker, `k${i}`, 'dropped'), false);
    assert.equal(breaker.stats().recent_fail_count, 0);
    assert.equal(breaker.stats().state, 'closed', 'five keys dropped: not an outage');

    failMany(breaker, 2);
    assert.equal(breaker.stats().state, 'open');
    await clock.advance(OPEN);
    const trial = breaker.acquire()!;
    assert.ok(trial.trial);
    assert.equal(breaker.acquire(), null);
    assert.equal(trial.failure('k1', 'dropped'), false);
    assert.equal(breaker.stats().state, 'half_open', 'no answer: neither closed nor opened again');
    assert.equal(breaker.refusing, false);
    const next = breaker.acquire();
    assert.ok(next?.trial, 'the next caller gets the trial at once');
    assert.equal(breaker.acquire(), null, 'and only it');
    next.success();
    assert.equal(breaker.stats().state, 'closed');
    assert.deepEqual(
      transitions.map((t) => t.reason),
      ['threshold', 'open_elapsed', 'trial_succeeded'],
    );
  });

  it('only the trial decides: a late call from before the opening does not close it', async () => {
    const { clock, breaker } = setup();
    const late: BreakerPermit = breaker.acquire()!;
    failMany(breaker, 10);
    await clock.advance(OPEN);
    const trial = breaker.acquire()!;
    late.success();
    assert.equal(breaker.state.kind, 'half_open');
    trial.success();
    assert.equal(breaker.state.kind, 'closed');
  });

  it('a success resets the failure count', () => {
    const { breaker } = setup();
    failMany(breaker, 9);
    breaker.acquire()!.success();
    assert.equal(breaker.stats().recent_fail_count, 0);
    failMany(breaker, 9);
    assert.equal(breaker.state.kind, 'closed', '9 + 9 failures with a success between never reach 10');
    fail(breaker, 'k3');
    assert.equal(breaker.state.kind, 'open');
  });

  it('changes its settings at run time (set_circuit_breaker_settings)', async () => {
    const { clock, breaker } = setup();
    breaker.setSettings({ failureThreshold: 3 });
    failMany(breaker, 2);
    assert.equal(breaker.state.kind, 'closed');
    fail(breaker, 'k3');
    assert.equal(breaker.state.kind, 'open', 'opens at the new threshold');
    breaker.setSettings({ openMs: 1000 });
    await clock.advance(1000);
    assert.ok(breaker.acquire()?.trial, 'the open period follows the new openMs');
    breaker.acquire(); // half-open: refused
    assert.throws(() => breaker.setSettings({ failureThreshold: 0 }), RangeError);
    assert.throws(() => breaker.setSettings({ failureWindowMs: 1.5 }), RangeError);
    assert.throws(() => breaker.setSettings({ openMs: 5, failureThreshold: -1 }), RangeError);
    assert.equal(breaker.settings.openMs, 1000, 'a refused change changes nothing');
    assert.equal(breaker.settings.failureThreshold, 3);

    const other = setup();
    failMany(other.breaker, 5);
    other.breaker.setSettings({ failureWindowMs: 10 });
    await other.clock.advance(10);
    assert.equal(other.breaker.stats().recent_fail_count, 0, 'a shorter window drops older failures');
    assert.equal(other.breaker.stats().failure_window_size, 0.01);
  });

  it('keeps at most max(100, threshold) failures (the seed deque(maxlen=100))', () => {
    // One key, so that it never opens and the cap alone bounds the list.
    const { breaker } = setup({ failureThreshold: 1000 });
    failMany(breaker, 1500, ['x']);
    assert.equal(breaker.stats().recent_fail_count, 1000);
    const small = setup({ failureThreshold: 50 });
    failMany(small.breaker, 150, ['x']);
    assert.equal(small.breaker.stats().recent_fail_count, 100);
  });

  it('reports each permit once, records the last failure time in unix seconds', () => {
    const { clock, breaker } = setup({ failureThreshold: 2 });
    const permit = breaker.acquire()!;
    assert.equal(permit.failure('k1', 'connection'), true);
    assert.equal(permit.failure('k2', 'connection'), false, 'a second report is ignored');
    permit.success();
    assert.equal(breaker.stats().recent_fail_count, 1);
    assert.equal(breaker.stats().last_failure_time, clock.now() / 1000);
    assert.equal(breaker.state.kind, 'closed');
  });
});
