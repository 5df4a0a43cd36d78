import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { BreakerStateName } from './breaker.ts';
import type { CacheAside } from './cache-aside.ts';
import type { CacheAsideStats } from './stats.ts';

const BREAKER_STATES: readonly BreakerStateName[] = ['closed', 'open', 'half_open'];

/**
 * Adds the cache-aside metrics to a service's registry, read from
 * `cache.stats()` at scrape time (nothing on the read path):
 * `cachecast_cache_hits_total{tier}`, `_misses_total`, `_fallbacks_total`,
 * `_fallback_errors_total`, `_coalesced_total`, `_write_backs_total{result}`,
 * `_redis_errors_total{kind}`, `_redis_skipped_total`, `_invalidations_total`,
 * `_pending_invalidations`, `_breaker_state{state}`, `_breaker_open`,
 * `_breaker_recent_failures`, `_breaker_opened_total`, `_alerts_total{result}`.
 */
export function registerCacheAsideMetrics(
  registry: Registry,
  cache: Pick<CacheAside, 'stats'>,
  prefix = 'cachecast_',
): void {
  const registers = [registry];
  const p = `${prefix}cache_`;
  const counter = (name: string, help: string, value: (s: CacheAsideStats) => number): void => {
    new Counter({
      name: p + name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value(cache.stats()));
      },
    });
  };
  const gauge = (name: string, help: string, value: (s: CacheAsideStats) => number): void => {
    new Gauge({
      name: p + name,
      help,
      registers,
      collect() {
        this.set(value(cache.stats()));
      },
    });
  };
  const labelled = <L extends string>(
    name: string,
    help: string,
    label: L,
    values: (s: CacheAsideStats) => Record<string, number>,
  ): void => {
    new Counter({
      name: p + name,
      help,
      labelNames: [label],
      registers,
      collect() {
        this.reset();
        for (const [v, n] of Object.entries(values(cache.stats())))
          this.inc({ [label]: v } as Record<L, string>, n);
      },
    });
  };

  labelled('hits_total', 'Reads answered from a cache tier', 'tier', (s) => ({
    memory: s.memory_hits,
    redis: s.redis_hits,
  }));
  counter('misses_total', 'Reads Redis answered with no such key', (s) => s.misses);
  counter('fallbacks_total', 'Fallback (database) calls made', (s) => s.fallbacks);
  counter('fallback_errors_total', 'Fallback calls that threw', (s) => s.fallback_errors);
  counter(
    'coalesced_total',
    'Reads that shared a lookup already running (single-flight)',
    (s) => s.coalesced,
  );
  labelled('write_backs_total', 'Fallback results written back to Redis, by result', 'result', (s) => ({
    ok: s.write_backs,
    failed: s.write_back_failures,
    skipped: s.write_backs_skipped,
  }));
  labelled('redis_errors_total', 'Redis calls that failed, by kind', 'kind', (s) => s.redis_errors_by_kind);
  counter('redis_skipped_total', 'Redis calls not made because the breaker was open', (s) => s.redis_skipped);
  counter('invalidations_total', 'Keys invalidated', (s) => s.invalidations);
  gauge('pending_invalidations', 'Invalidations Redis has not confirmed yet', (s) => s.pending_invalidations);
  new Gauge({
    name: `${p}breaker_state`,
    help: '1 for the state the circuit breaker is in',
    labelNames: ['state'],
    registers,
    collect() {
      const state = cache.stats().breaker.state;
      for (const s of BREAKER_STATES) this.set({ state: s }, s === state ? 1 : 0);
    },
  });
  gauge('breaker_open', '1 while Redis is skipped (open or half-open)', (s) => (s.is_open ? 1 : 0));
  gauge('breaker_recent_failures', 'Counted Redis failures within the window', (s) => s.recent_fail_count);
  counter('breaker_opened_total', 'Times the breaker opened', (s) => s.breaker.times_opened);
  labelled('alerts_total', 'Cache alerts, by result', 'result', (s) => ({
    sent: s.alerts.sent,
    failed: s.alerts.failed,
    suppressed_cooldown: s.alerts.suppressed_cooldown,
    suppressed_key_cap: s.alerts.suppressed_key_cap,
    dropped: s.alerts.dropped,
  }));
}
