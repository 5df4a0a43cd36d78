import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { CacheAlerts } from './alerts.ts';
import type { CircuitBreaker } from './breaker.ts';
import type { CacheKeyDef } from './cache-key.ts';
import type { RedisErrorKind } from './redis-errors.ts';
import { classifyRedisError } from './redis-errors.ts';
import type { RedisTier } from './redis-tier.ts';
import type { CacheAsideCounters } from './stats.ts';
import { zeroKinds } from './stats.ts';

export type RedisOutcome<T> = { ok: true; value: T } | { ok: false };

export interface GuardedRedisOptions {
  redis: RedisTier;
  breaker: CircuitBreaker;
  alerts: CacheAlerts;
  logger: Logger;
  counters: CacheAsideCounters;
  /** After every call Redis answered (the cache then sends the deletes it still owes). */
  onSuccess: () => void;
}

/**
 * Redis as the cache uses it: every call through the circuit breaker, and a
 * failure counted, logged and alerted, never thrown.
 */
export class GuardedRedis {
  readonly #redis: RedisTier;
  readonly #breaker: CircuitBreaker;
  readonly #alerts: CacheAlerts;
  readonly #logger: Logger;
  readonly #counters: CacheAsideCounters;
  readonly #onSuccess: () => void;
  readonly #errorsByKind = zeroKinds();
  #closed = false;

  constructor(options: GuardedRedisOptions) {
    this.#redis = options.redis;
    this.#breaker = options.breaker;
    this.#alerts = options.alerts;
    this.#logger = options.logger;
    this.#counters = options.counters;
    this.#onSuccess = options.onSuccess;
  }

  /** True once `shut()`: no call is made any more. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Stops making calls (the cache is closing; its connection goes next). */
  shut(): void {
    this.#closed = true;
  }

  errorsByKind(): Record<RedisErrorKind, number> {
    return { ...this.#errorsByKind };
  }

  /**
   * One Redis call through the breaker: skipped while it is open; its outcome
   * reported to it; a failure counted, logged and alerted, never thrown (a
   * `dropped` one is counted in the stats but neither by the breaker nor alerted).
   */
  async call<T>(
    key: Pick<CacheKeyDef, 'name'>,
    redisKey: string,
    what: 'read' | 'write' | 'delete' | 'invalidate',
    call: (redis: RedisTier) => Promise<T>,
  ): Promise<RedisOutcome<T>> {
    if (this.#closed) return { ok: false };
    const permit = this.#breaker.acquire();
    if (!permit) {
      this.#counters.redis_skipped++;
      return { ok: false };
    }
    try {
      const value = await call(this.#redis);
      permit.success();
      this.#onSuccess();
      return { ok: true, value };
    } catch (err) {
      const kind = classifyRedisError(err);
      const counted = permit.failure(redisKey, kind);
      this.#counters.redis_errors++;
      this.#errorsByKind[kind]++;
      this.#logger.debug(
        { key: key.name, what, kind, counted, err: describeError(err) },
        'redis call failed',
      );
      // A call lost with a connection dropped for another call's deadline says nothing about its own
      // key: the call whose deadline fired is the one counted and alerted.
      if (kind !== 'dropped') this.#alerts.keyError(key.name, `Cache ${what} failed`, err);
      return { ok: false };
    }
  }
}
