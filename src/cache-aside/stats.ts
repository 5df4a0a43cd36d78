import type { AlertStats } from './alerts.ts';
import type { BreakerStats } from './breaker.ts';
import type { RedisErrorKind } from './redis-errors.ts';
import type { RedisTierStats } from './redis-tier.ts';

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

/** The counters the cache's parts increment; `CacheAside.stats()` reports them (in this order). */
export interface CacheAsideCounters {
  memory_hits: number;
  redis_hits: number;
  misses: number;
  fallbacks: number;
  fallback_errors: number;
  coalesced: number;
  redis_skipped: number;
  redis_errors: number;
  corrupt_values: number;
  write_backs: number;
  write_back_failures: number;
  write_backs_skipped: number;
  invalidations: number;
  invalidations_bad_key: number;
  invalidations_forgotten: number;
}

export function zeroCounters(): CacheAsideCounters {
  return {
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
}

export function zeroKinds(): Record<RedisErrorKind, number> {
  return { connection: 0, timeout: 0, out_of_memory: 0, cluster_down: 0, other: 0, dropped: 0 };
}
