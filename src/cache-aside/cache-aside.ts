import { CachecastError, describeError, isCachecastError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { AlertStats } from './alerts.ts';
import { CacheAlerts } from './alerts.ts';
import { BackgroundTasks } from './background.ts';
import type { BreakerSettings, BreakerStats, BreakerTransition } from './breaker.ts';
import { CircuitBreaker } from './breaker.ts';
import type { CacheKeyDef, KeyParams } from './cache-key.ts';
import { buildCacheKey } from './cache-key.ts';
import { MemoryTier } from './memory-tier.ts';
import type { CacheAsideOptions, ResolvedCacheAsideOptions } from './options.ts';
import { normalizeCacheAsideOptions } from './options.ts';
import type { RedisErrorKind } from './redis-errors.ts';
import { classifyRedisError } from './redis-errors.ts';
import type { RedisTierStats } from './redis-tier.ts';
import { RedisTier } from './redis-tier.ts';
import type { Flight } from './single-flight.ts';
import { SingleFlight } from './single-flight.ts';

/** What one lookup produced: the stored text (undefined: nothing cacheable) and its parse for the caller that ran it. */
interface LookupResult {
  json: string | undefined;
  value: unknown;
}

/** A delete Redis has not confirmed: the key's declared name, and when it was asked for (see `#seq`). */
interface PendingDelete {
  name: string;
  seq: number;
}

type RedisOutcome<T> = { ok: true; value: T } | { ok: false };

/**
 * `/cache` on the admin port: the seed's `get_circuit_breaker_stats()` fields
 * at the top level (is_open, recent_fail_count, failure_threshold,
 * failure_window_size and timeout in seconds, last_failure_time in unix
 * seconds), then the cache's counters and each part's details.
 */
export interface CacheAsideStats {
  is_open: boolean;
  recent_fail_count: number;
  failure_threshold: number;
  failure_window_size: number;
  timeout: number;
  last_failure_time: number | null;
  /** memory_hits + redis_hits. */
  hits: number;
  memory_hits: number;
  redis_hits: number;
  /** Redis answered: no such key. */
  misses: number;
  /** Fallback (database) calls made. */
  fallbacks: number;
  fallback_errors: number;
  /** Callers that shared another caller's lookup (single-flight) instead of making their own. */
  coalesced: number;
  /** Redis calls not made because the breaker was open. */
  redis_skipped: number;
  redis_errors: number;
  redis_errors_by_kind: Record<RedisErrorKind, number>;
  /** Values found in Redis that were not JSON (replaced by the fallback's). */
  corrupt_values: number;
  /** Fallback results written to Redis. */
  write_backs: number;
  write_back_failures: number;
  /** Not attempted: breaker open, invalidated meanwhile, closing, or too many in flight. */
  write_backs_skipped: number;
  invalidations: number;
  /** Parameter sets `invalidateMany` skipped because they build no valid key (CACHE_BAD_KEY). */
  invalidations_bad_key: number;
  /** Invalidations Redis has not confirmed yet (deleted once it can be reached). */
  pending_invalidations: number;
  invalidations_forgotten: number;
  breaker: BreakerStats;
  redis: RedisTierStats;
  memory: { size: number; evictions: number };
  alerts: AlertStats;
}

function zeroKinds(): Record<RedisErrorKind, number> {
  return { connection: 0, timeout: 0, out_of_memory: 0, cluster_down: 0, other: 0, dropped: 0 };
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
  /** Redis key -> deletes Redis has not confirmed. Insertion order = age. */
  readonly #pendingDeletes = new Map<string, PendingDelete>();
  /**
   * Orders invalidations against lookups and deletes: each invalidation takes
   * the next number; a lookup notes the current one when it starts, a DEL
   * when it is sent. A remembered delete with a number above a lookup's came
   * after that lookup started (its data may predate the write): the lookup's
   * write-back must neither be made nor settle it. A DEL settles only the
   * remembered deletes numbered up to its own.
   */
  #seq = 0;
  #flushing = false;
  #closed = false;
  #redisClosed = false;
  #closing: Promise<void> | undefined;
  readonly #stats = {
    memory_hits: 0,
    redis_hits: 0,
    misses: 0,
    fallbacks: 0,
    fallback_errors: 0,
    coalesced: 0,
    redis_skipped: 0,
    redis_errors: 0,
    corrupt_values: 0,
    write_backs: 0,
    write_back_failures: 0,
    write_backs_skipped: 0,
    invalidations: 0,
    invalidations_bad_key: 0,
    invalidations_forgotten: 0,
  };
  readonly #errorsByKind = zeroKinds();

  constructor(options: CacheAsideOptions) {
    this.#o = normalizeCacheAsideOptions(options);
    this.#logger = this.#o.logger;
    const { clock } = this.#o;
    this.#redis = new RedisTier({
      url: this.#o.redisUrl,
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
      redis_errors_by_kind: { ...this.#errorsByKind },
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
    const startSeq = this.#seq;
    if (this.#pendingDeletes.has(redisKey)) {
      // Redis may still hold what an invalidation removed: delete it before anything else.
      const deleted = await this.#redisCall(key, redisKey, 'delete', (r) => r.del([redisKey]));
      if (deleted.ok) this.#settleDeletes([redisKey], startSeq);
    } else {
      const read = await this.#redisCall(key, redisKey, 'read', (r) => r.get(redisKey));
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
   * breaker and the alerts only. `startSeq`: `#seq` when the lookup began.
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
        if (flight.detached || this.#breaker.refusing || this.#invalidatedSince(redisKey, startSeq)) {
          this.#stats.write_backs_skipped++;
          return;
        }
        const written = await this.#redisCall(key, redisKey, 'write', (r) =>
          r.set(redisKey, json, key.ttlMs),
        );
        if (written.ok) {
          this.#stats.write_backs++;
          // The value read after an unconfirmed invalidation overwrote what it meant to remove; one
          // remembered while this SET was in flight stays (the SET may have written the old data).
          this.#settleDeletes([redisKey], startSeq);
        } else {
          this.#stats.write_back_failures++;
        }
      },
      (err) => this.#logger.warn({ err: describeError(err) }, 'write-back failed'),
    );
  }

  async #invalidate(key: CacheKeyDef, redisKeys: string[]): Promise<boolean> {
    const seq = ++this.#seq;
    for (const k of redisKeys) {
      this.#memory.delete(k);
      this.#flights.detach(k);
    }
    this.#stats.invalidations += redisKeys.length;
    if (this.#redisClosed) return false;
    const deleted = await this.#redisCall(key, redisKeys[0]!, 'invalidate', (r) => r.del(redisKeys));
    if (deleted.ok) {
      this.#settleDeletes(redisKeys, seq);
      return true;
    }
    for (const k of redisKeys) this.#rememberDelete(k, key.name, seq);
    return false;
  }

  /** Whether a delete of `redisKey` asked for after `seq` is still unconfirmed. */
  #invalidatedSince(redisKey: string, seq: number): boolean {
    const pending = this.#pendingDeletes.get(redisKey);
    return pending !== undefined && pending.seq > seq;
  }

  /**
   * Forgets the remembered deletes of `redisKeys` numbered up to `seq`: a DEL
   * sent (or a value read) at `seq` covers them. A later one stays.
   */
  #settleDeletes(redisKeys: readonly string[], seq: number): void {
    for (const k of redisKeys) {
      const pending = this.#pendingDeletes.get(k);
      if (pending !== undefined && pending.seq <= seq) this.#pendingDeletes.delete(k);
    }
  }

  #rememberDelete(redisKey: string, name: string, seq: number): void {
    if (this.#o.maxPendingInvalidations === 0) {
      this.#stats.invalidations_forgotten++;
      return;
    }
    const previous = this.#pendingDeletes.get(redisKey);
    // An invalidation whose DEL failed after a later one was remembered must not lower its number.
    if (previous !== undefined && previous.seq > seq) return;
    this.#pendingDeletes.delete(redisKey);
    this.#pendingDeletes.set(redisKey, { name, seq });
    while (this.#pendingDeletes.size > this.#o.maxPendingInvalidations) {
      const oldest = this.#pendingDeletes.keys().next().value;
      if (oldest === undefined) break;
      this.#pendingDeletes.delete(oldest);
      this.#stats.invalidations_forgotten++;
      this.#logger.warn(
        { key: oldest },
        'too many unconfirmed invalidations: the oldest will live out its TTL',
      );
    }
  }

  /** Deletes what invalidations could not, once Redis answers again (in the background). */
  #flushPendingDeletes(): void {
    if (this.#flushing || this.#pendingDeletes.size === 0 || this.#redisClosed) return;
    this.#flushing = true;
    const started = this.#writeBacks.run(
      async () => {
        try {
          while (this.#pendingDeletes.size > 0) {
            const batch = [...this.#pendingDeletes].slice(0, 500);
            const [firstKey, { name }] = batch[0]!;
            const keys = batch.map(([k]) => k);
            // Sent now: it covers what is remembered now, not an invalidation made while it is in flight.
            const seq = this.#seq;
            const deleted = await this.#redisCall({ name }, firstKey, 'invalidate', (r) => r.del(keys));
            if (!deleted.ok) break;
            this.#settleDeletes(keys, seq);
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

  /**
   * One Redis call through the breaker: skipped while it is open; its outcome
   * reported to it; a failure counted, logged and alerted, never thrown (a
   * `dropped` one is counted in the stats but neither by the breaker nor alerted).
   */
  async #redisCall<T>(
    key: Pick<CacheKeyDef, 'name'>,
    redisKey: string,
    what: 'read' | 'write' | 'delete' | 'invalidate',
    call: (redis: RedisTier) => Promise<T>,
  ): Promise<RedisOutcome<T>> {
    if (this.#redisClosed) return { ok: false };
    const permit = this.#breaker.acquire();
    if (!permit) {
      this.#stats.redis_skipped++;
      return { ok: false };
    }
    try {
      const value = await call(this.#redis);
      permit.success();
      if (this.#pendingDeletes.size > 0) this.#flushPendingDeletes();
      return { ok: true, value };
    } catch (err) {
      const kind = classifyRedisError(err);
      const counted = permit.failure(redisKey, kind);
      this.#stats.redis_errors++;
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
      this.#redisClosed = true;
      await this.#alerts.close();
      await this.#redis.close();
      this.#memory.clear();
    })();
    return this.#closing;
  }
}
