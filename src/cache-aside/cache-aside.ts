import { CachecastError, describeError, isCachecastError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { CacheAlerts } from './alerts.ts';
import { BackgroundTasks } from './background.ts';
import type { BreakerSettings, BreakerStats, BreakerTransition } from './breaker.ts';
import { CircuitBreaker } from './breaker.ts';
import type { CacheKeyDef, KeyParams } from './cache-key.ts';
import { buildCacheKey } from './cache-key.ts';
import { GuardedRedis } from './guarded-redis.ts';
import { MemoryTier } from './memory-tier.ts';
import type { CacheAsideOptions, ResolvedCacheAsideOptions } from './options.ts';
import { normalizeCacheAsideOptions } from './options.ts';
import { PendingDeletes } from './pending-deletes.ts';
import { RedisTier } from './redis-tier.ts';
import type { Flight } from './single-flight.ts';
import { SingleFlight } from './single-flight.ts';
import type { CacheAsideStats } from './stats.ts';
import { zeroCounters } from './stats.ts';

/** What one lookup produced: the stored text (undefined: nothing cacheable) and its parse for the caller that ran it. */
interface LookupResult {
  json: string | undefined;
  value: unknown;
}

/**
 * Seed 003's `CacheService`: cache-aside reads with a fallback, guarded by a
 * circuit breaker, with Slack alerts.
 *
 * `getWithFallback(key, params, fallback)` reads, in order:
 * 1. the in-process tier, when the key declares `localTtlMs`;
 * 2. Redis, unless the breaker is open (every call bounded by the command
 *    timeout; its failures feed the breaker and the alerts);
 * 3. the fallback (the database). Its result is written back to Redis in the
 *    background (the seed's thread), never delaying or failing the caller.
 *
 * Concurrent lookups of one key share one Redis read and one fallback call.
 * Values are JSON: `null` is cached as `null` (a hit, not a miss), and every
 * caller gets its own copy, the same whichever tier answered. A fallback
 * that returns `undefined` is not cached.
 *
 * `invalidate(key, params)` is for writers, after they commit: it drops the
 * key from this process, makes later readers start a fresh lookup (a lookup
 * already running will not cache its now-stale result) and deletes it from
 * Redis; when Redis cannot be reached, the delete is remembered, done once
 * Redis is back, and until then this process does not read that key from Redis.
 *
 * The breaker is per process (seed §8-1): every instance decides for itself.
 */
export class CacheAside {
  readonly #o: ResolvedCacheAsideOptions;
  readonly #logger: Logger;
  readonly #redis: RedisTier;
  readonly #memory: MemoryTier;
  readonly #breaker: CircuitBreaker;
  readonly #alerts: CacheAlerts;
  readonly #flights = new SingleFlight<LookupResult>();
  readonly #writeBacks: BackgroundTasks;
  readonly #stats = zeroCounters();
  /** Invalidations Redis has not confirmed, and the numbering that orders them against lookups. */
  readonly #pendingDeletes: PendingDeletes;
  /** Every Redis call goes through it (the breaker, the counters, the alerts). */
  readonly #guarded: GuardedRedis;
  #flushing = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: CacheAsideOptions) {
    this.#o = normalizeCacheAsideOptions(options);
    this.#logger = this.#o.logger;
    const { clock } = this.#o;
    this.#redis = new RedisTier({
      url: this.#o.redisUrl,
      sentinels: this.#o.redisSentinels,
      sentinelName: this.#o.redisSentinelName,
      commandTimeoutMs: this.#o.commandTimeoutMs,
      logger: this.#logger,
    });
    this.#memory = new MemoryTier(this.#o.memoryMaxEntries, clock);
    this.#alerts = new CacheAlerts({ ...this.#o.alerts, clock, logger: this.#logger });
    this.#breaker = new CircuitBreaker({
      ...this.#o.breaker,
      clock,
      onTransition: (t) => this.#onBreakerTransition(t),
    });
    this.#writeBacks = new BackgroundTasks(this.#o.maxPendingWriteBacks);
    this.#pendingDeletes = new PendingDeletes(this.#o.maxPendingInvalidations, this.#logger, this.#stats);
    this.#guarded = new GuardedRedis({
      redis: this.#redis,
      breaker: this.#breaker,
      alerts: this.#alerts,
      logger: this.#logger,
      counters: this.#stats,
      onSuccess: () => {
        if (this.#pendingDeletes.size > 0) this.#flushPendingDeletes();
      },
    });
  }

  /**
   * The value for `key` with `params`: from the in-process tier, Redis, or
   * `fallback()` (then written back to Redis in the background). Throws only
   * what `fallback` throws (and CACHE_BAD_KEY for bad parameters): Redis
   * failures never reach the caller. Callers that join a lookup already
   * running share its result; their own `fallback` is not called.
   */
  async getWithFallback<T extends string, V>(
    key: CacheKeyDef<T>,
    params: KeyParams<T>,
    fallback: () => V | Promise<V>,
  ): Promise<V> {
    const redisKey = buildCacheKey(this.#o.keyPrefix, key, params);
    if (this.#closed) return await fallback();
    if (key.localTtlMs > 0) {
      const json = this.#memory.get(redisKey);
      if (json !== undefined) {
        this.#stats.memory_hits++;
        return JSON.parse(json) as V;
      }
    }
    const { flight, joined } = this.#flights.run(redisKey, (f) => this.#lookup(key, redisKey, fallback, f));
    const result = await flight.promise;
    if (!joined) return result.value as V;
    this.#stats.coalesced++;
    return (result.json === undefined ? undefined : JSON.parse(result.json)) as V;
  }

  /**
   * The seed's `@cache_with_fallback` decorator, typed: returns `fn` with the
   * same parameters, reading through the cache under the key `params(...args)`
   * builds. `fn` runs only on a miss (or with Redis unavailable).
   *
   * ```ts
   * const getCollection = cache.wrap(CacheKey.USER_CHARACTERS, (userId: string) => ({ user_id: userId }), loadCollection);
   * await getCollection('u-1');
   * ```
   */
  wrap<T extends string, A extends unknown[], V>(
    key: CacheKeyDef<T>,
    // Inferred from `fn` alone: `params` may take fewer arguments (NoInfer<A> would not allow that).
    params: (...args: [A][A extends unknown ? 0 : never]) => KeyParams<T>,
    fn: (...args: A) => V | Promise<V>,
  ): (...args: A) => Promise<V> {
    return (...args: A) => this.getWithFallback(key, params(...args), () => fn(...args));
  }

  /**
   * For writers, after their commit. Resolves true once Redis confirmed the
   * delete; false when it could not be reached (the delete is then retried
   * once it can, and this process skips Redis for the key until then). Never
   * throws for a Redis failure.
   */
  invalidate<T extends string>(key: CacheKeyDef<T>, params: KeyParams<T>): Promise<boolean> {
    return this.#invalidate(key, [buildCacheKey(this.#o.keyPrefix, key, params)]);
  }

  /**
   * `invalidate` for many parameter sets of one key, in one Redis call. A
   * parameter set that builds no valid key (CACHE_BAD_KEY: nothing can be
   * cached under it either) is skipped, logged and counted
   * (`invalidations_bad_key`), so one bad id cannot stop the others'
   * invalidation. Resolves as `invalidate` does for the valid ones.
   */
  invalidateMany<T extends string>(
    key: CacheKeyDef<T>,
    paramsList: ReadonlyArray<KeyParams<T>>,
  ): Promise<boolean> {
    const keys = new Set<string>();
    for (const params of paramsList) {
      try {
        keys.add(buildCacheKey(this.#o.keyPrefix, key, params));
      } catch (err) {
        if (!isCachecastError(err, 'CACHE_BAD_KEY')) throw err;
        this.#stats.invalidations_bad_key++;
        this.#logger.warn(
          { key: key.name, err: describeError(err) },
          'invalidation skipped: its parameters build no cache key',
        );
      }
    }
    return keys.size === 0 ? Promise.resolve(true) : this.#invalidate(key, [...keys]);
  }

  /** The seed's `set_circuit_breaker_settings`, validated (RangeError) and applied at once. */
  setCircuitBreakerSettings(settings: Partial<BreakerSettings>): void {
    this.#breaker.setSettings(settings);
    this.#logger.info({ settings: this.#breaker.settings }, 'circuit breaker settings changed');
  }

  /** The seed's `get_circuit_breaker_stats()`. */
  getCircuitBreakerStats(): BreakerStats {
    return this.#breaker.stats();
  }

  /** Changes ALERT_COOLDOWN_MS at run time. */
  setAlertCooldown(ms: number): void {
    this.#alerts.cooldownMs = ms;
  }

  stats(): CacheAsideStats {
    const breaker = this.#breaker.stats();
    const s = this.#stats;
    return {
      is_open: breaker.is_open,
      recent_fail_count: breaker.recent_fail_count,
      failure_threshold: breaker.failure_threshold,
      failure_window_size: breaker.failure_window_size,
      timeout: breaker.timeout,
      last_failure_time: breaker.last_failure_time,
      hits: s.memory_hits + s.redis_hits,
      ...s,
      redis_errors_by_kind: this.#guarded.errorsByKind(),
      pending_invalidations: this.#pendingDeletes.size,
      write_backs_skipped: s.write_backs_skipped + this.#writeBacks.dropped,
      breaker,
      redis: this.#redis.stats(),
      memory: { size: this.#memory.size, evictions: this.#memory.evictions },
      alerts: this.#alerts.stats(),
    };
  }

  /** Write-backs and deferred deletes in flight (tests and benchmarks wait for 0). */
  get pendingWork(): number {
    return this.#writeBacks.size;
  }

  /** Resolves once the background work running now (write-backs, deferred deletes) has ended. */
  settled(): Promise<void> {
    return this.#writeBacks.drain();
  }

  async #lookup<V>(
    key: CacheKeyDef,
    redisKey: string,
    fallback: () => V | Promise<V>,
    flight: Flight<LookupResult>,
  ): Promise<LookupResult> {
    // Invalidations numbered above this one came after this lookup began.
    const startSeq = this.#pendingDeletes.seq;
    if (this.#pendingDeletes.has(redisKey)) {
      // Redis may still hold what an invalidation removed: delete it before anything else.
      const deleted = await this.#guarded.call(key, redisKey, 'delete', (r) => r.del([redisKey]));
      if (deleted.ok) this.#pendingDeletes.settle([redisKey], startSeq);
    } else {
      const read = await this.#guarded.call(key, redisKey, 'read', (r) => r.get(redisKey));
      if (read.ok && read.value !== null) {
        try {
          const value: unknown = JSON.parse(read.value);
          this.#stats.redis_hits++;
          if (key.localTtlMs > 0 && !flight.detached) this.#memory.set(redisKey, read.value, key.localTtlMs);
          return { json: read.value, value };
        } catch {
          this.#stats.corrupt_values++;
          const err = new CachecastError('CACHE_CORRUPT_VALUE', `${redisKey} does not hold JSON`);
          this.#alerts.keyError(key.name, 'Cache value unreadable', err);
        }
      } else if (read.ok) {
        this.#stats.misses++;
      }
    }

    this.#stats.fallbacks++;
    let value: V;
    try {
      value = await fallback();
    } catch (err) {
      this.#stats.fallback_errors++;
      throw err;
    }
    // undefined (or a function) has no JSON form: returned as undefined, not cached.
    const json = value === undefined ? undefined : (JSON.stringify(value) as string | undefined);
    if (json === undefined) return { json: undefined, value: undefined };
    if (!flight.detached) {
      if (key.localTtlMs > 0) this.#memory.set(redisKey, json, key.localTtlMs);
      this.#writeBack(key, redisKey, json, flight, startSeq);
    } else {
      this.#stats.write_backs_skipped++;
    }
    // The caller gets what every later reader will get: the value as stored.
    return { json, value: JSON.parse(json) };
  }

  /**
   * The seed's `_set_cache_data`: off the response path; failures go to the
   * breaker and the alerts only. `startSeq`: the invalidation number (`PendingDeletes.seq`) when the lookup began.
   */
  #writeBack(
    key: CacheKeyDef,
    redisKey: string,
    json: string,
    flight: Flight<LookupResult>,
    startSeq: number,
  ): void {
    if (this.#closed) {
      this.#stats.write_backs_skipped++;
      return;
    }
    this.#writeBacks.run(
      async () => {
        // Checked right before the SET: an invalidation after this point sends its DEL behind it,
        // or, when that DEL cannot be made, is remembered with a number above startSeq (see below).
        if (
          flight.detached ||
          this.#breaker.refusing ||
          this.#pendingDeletes.invalidatedSince(redisKey, startSeq)
        ) {
          this.#stats.write_backs_skipped++;
          return;
        }
        const written = await this.#guarded.call(key, redisKey, 'write', (r) =>
          r.set(redisKey, json, key.ttlMs),
        );
        if (written.ok) {
          this.#stats.write_backs++;
          // The value read after an unconfirmed invalidation overwrote what it meant to remove; one
          // remembered while this SET was in flight stays (the SET may have written the old data).
          this.#pendingDeletes.settle([redisKey], startSeq);
        } else {
          this.#stats.write_back_failures++;
        }
      },
      (err) => this.#logger.warn({ err: describeError(err) }, 'write-back failed'),
    );
  }

  async #invalidate(key: CacheKeyDef, redisKeys: string[]): Promise<boolean> {
    const seq = this.#pendingDeletes.next();
    for (const k of redisKeys) {
      this.#memory.delete(k);
      this.#flights.detach(k);
    }
    this.#stats.invalidations += redisKeys.length;
    if (this.#guarded.closed) return false;
    const deleted = await this.#guarded.call(key, redisKeys[0]!, 'invalidate', (r) => r.del(redisKeys));
    if (deleted.ok) {
      this.#pendingDeletes.settle(redisKeys, seq);
      return true;
    }
    for (const k of redisKeys) this.#pendingDeletes.remember(k, key.name, seq);
    return false;
  }

  /** Deletes what invalidations could not, once Redis answers again (in the background). */
  #flushPendingDeletes(): void {
    if (this.#flushing || this.#pendingDeletes.size === 0 || this.#guarded.closed) return;
    this.#flushing = true;
    const started = this.#writeBacks.run(
      async () => {
        try {
          while (this.#pendingDeletes.size > 0) {
            const { keys, name } = this.#pendingDeletes.oldest(500);
            // Sent now: it covers what is remembered now, not an invalidation made while it is in flight.
            const seq = this.#pendingDeletes.seq;
            const deleted = await this.#guarded.call({ name }, keys[0]!, 'invalidate', (r) => r.del(keys));
            if (!deleted.ok) break;
            this.#pendingDeletes.settle(keys, seq);
          }
        } finally {
          this.#flushing = false;
        }
      },
      (err) => this.#logger.warn({ err: describeError(err) }, 'deferred invalidation failed'),
    );
    // Too much in flight: the next successful call tries again.
    if (!started) this.#flushing = false;
  }

  #onBreakerTransition(t: BreakerTransition): void {
    const log = { from: t.from, to: t.to, reason: t.reason, recent_fail_count: t.stats.recent_fail_count };
    if (t.to === 'open') this.#logger.warn(log, 'circuit breaker open: Redis is skipped');
    else if (t.to === 'closed') this.#logger.info(log, 'circuit breaker closed');
    else this.#logger.info(log, 'circuit breaker half-open: one trial call');
    this.#alerts.breakerChanged(t);
    if (t.to === 'closed') this.#flushPendingDeletes();
  }

  /**
   * Idempotent and draining: later reads go straight to their fallback; the
   * write-backs and deferred deletes already started finish (each bounded by
   * the command timeout), alerts being sent are delivered, then Redis disconnects.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      await this.#writeBacks.drain();
      this.#guarded.shut();
      await this.#alerts.close();
      await this.#redis.close();
      this.#memory.clear();
    })();
    return this.#closing;
  }
}
