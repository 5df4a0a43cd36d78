import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { intVar } from '../config/env.ts';
import { CachecastError, OptionTypeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { integerRangeOption } from '../options.ts';
import type { RedisNode } from '../redis/target.ts';
import { DEFAULT_SENTINEL_NAME } from '../redis/target.ts';
import type { CacheAlertsOptions } from './alerts.ts';
import type { BreakerSettings } from './breaker.ts';
import { DEFAULT_BREAKER_SETTINGS, normalizeBreakerSettings } from './breaker.ts';

export interface CacheAsideOptions {
  /** Redis (REDIS_URL). */
  redisUrl: string;
  /**
   * REDIS_SENTINELS: with them, the master of `redisSentinelName` that they
   * watch (`redisUrl` then gives database, user, password and TLS).
   */
  redisSentinels?: readonly RedisNode[] | undefined;
  /** REDIS_SENTINEL_NAME. @default 'mymaster' */
  redisSentinelName?: string | undefined;
  /** First segment of every key: `<prefix>:<version>:<template>`. @default 'cachecast' */
  keyPrefix?: string;
  /**
   * The most a Redis operation may take, connecting included
   * (CACHE_COMMAND_TIMEOUT_MS): a dead or stalled Redis costs at most this
   * per request, and only until the breaker opens.
   * @default 100
   */
  commandTimeoutMs?: number;
  /** CACHE_BREAKER_THRESHOLD / _WINDOW_MS / _OPEN_MS. @default 10 / 60000 / 180000 */
  breaker?: Partial<BreakerSettings>;
  /** SLACK_WEBHOOK_URL, ALERT_COOLDOWN_MS and the rest (see CacheAlertsOptions). */
  alerts?: Omit<CacheAlertsOptions, 'clock' | 'logger'>;
  /** Entries the in-process tier holds (least recently used evicted). @default 10000 */
  memoryMaxEntries?: number;
  /** Write-backs in flight at once; past it a write-back is skipped (counted). @default 1000 */
  maxPendingWriteBacks?: number;
  /**
   * Invalidations remembered while Redis cannot be reached, deleted once it
   * can; past it the oldest is forgotten (its key then lives out its TTL).
   * @default 10000
   */
  maxPendingInvalidations?: number;
  /** Drives the breaker, the alert cooldown and the in-process TTLs (I/O deadlines use real time). */
  clock?: Clock;
  logger?: Logger;
}

export interface ResolvedCacheAsideOptions {
  redisUrl: string;
  redisSentinels: readonly RedisNode[] | undefined;
  redisSentinelName: string;
  keyPrefix: string;
  commandTimeoutMs: number;
  breaker: BreakerSettings;
  alerts: Omit<CacheAlertsOptions, 'clock' | 'logger'>;
  memoryMaxEntries: number;
  maxPendingWriteBacks: number;
  maxPendingInvalidations: number;
  clock: Clock;
  logger: Logger;
}

export function normalizeCacheAsideOptions(options: CacheAsideOptions): ResolvedCacheAsideOptions {
  if (typeof options.redisUrl !== 'string' || options.redisUrl.length === 0) {
    throw new OptionTypeError('redisUrl is required');
  }
  const keyPrefix = options.keyPrefix ?? 'cachecast';
  if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(keyPrefix)) {
    throw new OptionTypeError('keyPrefix must be 1-100 characters of A-Z a-z 0-9 _ . : -');
  }
  return {
    redisUrl: options.redisUrl,
    redisSentinels: options.redisSentinels?.length ? options.redisSentinels : undefined,
    redisSentinelName: options.redisSentinelName ?? DEFAULT_SENTINEL_NAME,
    keyPrefix,
    commandTimeoutMs: integerRangeOption('commandTimeoutMs', options.commandTimeoutMs, 100, 1, 60_000),
    breaker: normalizeBreakerSettings(options.breaker ?? {}, DEFAULT_BREAKER_SETTINGS),
    alerts: { ...options.alerts },
    memoryMaxEntries: integerRangeOption('memoryMaxEntries', options.memoryMaxEntries, 10_000, 0, 10_000_000),
    maxPendingWriteBacks: integerRangeOption(
      'maxPendingWriteBacks',
      options.maxPendingWriteBacks,
      1000,
      1,
      1_000_000,
    ),
    maxPendingInvalidations: integerRangeOption(
      'maxPendingInvalidations',
      options.maxPendingInvalidations,
      10_000,
      0,
      10_000_000,
    ),
    clock: options.clock ?? systemClock,
    logger: (options.logger ?? silentLogger).child({ component: 'cache-aside' }),
  };
}

/** The cache-aside part of the environment (docs/cache-aside.md). */
export interface CacheAsideConfig {
  commandTimeoutMs: number;
  breaker: BreakerSettings;
  alertCooldownMs: number;
  /** SLACK_WEBHOOK_URL: a secret; never logged or echoed in errors. */
  slackWebhookUrl: string | undefined;
  slackTimeoutMs: number;
}

const DAY_MS = 24 * 3_600_000;

/**
 * Reads CACHE_BREAKER_THRESHOLD, CACHE_BREAKER_WINDOW_MS, CACHE_BREAKER_OPEN_MS,
 * CACHE_COMMAND_TIMEOUT_MS, ALERT_COOLDOWN_MS, SLACK_WEBHOOK_URL and
 * SLACK_WEBHOOK_TIMEOUT_MS, with the defaults of CONTRACT.md.
 */
export function loadCacheAsideConfig(env: NodeJS.ProcessEnv = process.env): CacheAsideConfig {
  return {
    commandTimeoutMs: intVar(env, 'CACHE_COMMAND_TIMEOUT_MS', 100, 1, 60_000),
    breaker: {
      failureThreshold: intVar(
        env,
        'CACHE_BREAKER_THRESHOLD',
        DEFAULT_BREAKER_SETTINGS.failureThreshold,
        1,
        100_000,
      ),
      failureWindowMs: intVar(
        env,
        'CACHE_BREAKER_WINDOW_MS',
        DEFAULT_BREAKER_SETTINGS.failureWindowMs,
        1,
        7 * DAY_MS,
      ),
      openMs: intVar(env, 'CACHE_BREAKER_OPEN_MS', DEFAULT_BREAKER_SETTINGS.openMs, 1, 7 * DAY_MS),
    },
    alertCooldownMs: intVar(env, 'ALERT_COOLDOWN_MS', 600_000, 0, 7 * DAY_MS),
    slackWebhookUrl: webhookUrl(env.SLACK_WEBHOOK_URL),
    slackTimeoutMs: intVar(env, 'SLACK_WEBHOOK_TIMEOUT_MS', 5000, 1, 60_000),
  };
}

function webhookUrl(raw: string | undefined): string | undefined {
  const value = raw?.trim();
  if (!value) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    // The value is a secret: never echoed.
    throw new CachecastError('CONFIG_INVALID', 'SLACK_WEBHOOK_URL is not a URL');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new CachecastError(
      'CONFIG_INVALID',
      `SLACK_WEBHOOK_URL must use https: or http:, got ${parsed.protocol}`,
    );
  }
  return value;
}
