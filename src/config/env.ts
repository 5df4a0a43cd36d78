import { CachecastError } from '../errors.ts';
import type { LogLevel } from '../logger.ts';
import { parseAmqpUrls } from '../amqp/url.ts';
import { redactUrl } from '../util/redact.ts';
import type { RedisTarget } from '../redis/target.ts';
import type { QueueType } from '../amqp/queue-type.ts';
import { QUEUE_TYPES } from '../amqp/queue-type.ts';
import { DEFAULT_SENTINEL_NAME, parseSentinels } from '../redis/target.ts';

/** The shared part of the environment (CONTRACT.md); services add their own variables. */
export interface CommonConfig {
  rabbitmqUrl: string;
  redisUrl: string;
  /**
   * Where every Redis client of the service connects: REDIS_URL, or with
   * REDIS_SENTINELS the master of REDIS_SENTINEL_NAME (REDIS_URL then gives
   * the database, user and password).
   */
  redis: RedisTarget;
  /** EVENT_QUEUE_TYPE (RabbitMQBusOptions.eventQueueType). @default 'classic' */
  eventQueueType: QueueType;
  databaseUrl: string;
  logLevel: LogLevel;
  /** CACHE_EVENT_SECRET: sign and require signed events when set. */
  eventSecret: string | undefined;
  /**
   * ADMIN_PORT_TOKEN: bearer token for the admin port's detail endpoints
   * (/decisions, ...); while unset they answer 403.
   */
  adminPortToken: string | undefined;
}

export const DEFAULTS = {
  RABBITMQ_URL: 'amqp://guest:guest@127.0.0.1:5672/',
  REDIS_URL: 'redis://127.0.0.1:6379/0',
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/postgres',
  LOG_LEVEL: 'info',
} as const;

const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * Reads and validates the environment once. Errors name the variable and
 * never echo a value that may hold a secret.
 */
export function loadCommonConfig(env: NodeJS.ProcessEnv = process.env): CommonConfig {
  const rabbitmqUrl = env.RABBITMQ_URL?.trim() || DEFAULTS.RABBITMQ_URL;
  parseAmqpUrls(rabbitmqUrl);
  const redisUrl = url('REDIS_URL', env.REDIS_URL?.trim() || DEFAULTS.REDIS_URL, ['redis:', 'rediss:']);
  const databaseUrl = url('DATABASE_URL', env.DATABASE_URL?.trim() || DEFAULTS.DATABASE_URL, [
    'postgres:',
    'postgresql:',
  ]);
  const logLevel = (env.LOG_LEVEL?.trim() || DEFAULTS.LOG_LEVEL) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new CachecastError('CONFIG_INVALID', `LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  }
  const eventSecret = secretVar(env, 'CACHE_EVENT_SECRET', 16);
  const adminPortToken = secretVar(env, 'ADMIN_PORT_TOKEN', 16);
  const sentinels = env.REDIS_SENTINELS?.trim() ? parseSentinels(env.REDIS_SENTINELS) : undefined;
  const sentinelName = env.REDIS_SENTINEL_NAME?.trim() || DEFAULT_SENTINEL_NAME;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(sentinelName)) {
    throw new CachecastError(
      'CONFIG_INVALID',
      'REDIS_SENTINEL_NAME must be 1-64 letters, digits, ".", "_" or "-"',
    );
  }
  const redis: RedisTarget = sentinels ? { url: redisUrl, sentinels, sentinelName } : { url: redisUrl };
  const eventQueueType = choiceVar(env, 'EVENT_QUEUE_TYPE', QUEUE_TYPES, 'classic');
  return { rabbitmqUrl, redisUrl, redis, eventQueueType, databaseUrl, logLevel, eventSecret, adminPortToken };
}

function url(name: string, value: string, protocols: string[]): string {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new CachecastError('CONFIG_INVALID', `${name} is not a URL: ${redactUrl(value)}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new CachecastError(
      'CONFIG_INVALID',
      `${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`,
    );
  }
  return value;
}

/** Parses an integer variable with bounds, or returns the default. */
export function intVar(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new CachecastError(
      'CONFIG_INVALID',
      `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return value;
}

/**
 * A secret from the environment: undefined when unset; refused (without
 * echoing it) when shorter than `minLength`.
 */
export function secretVar(env: NodeJS.ProcessEnv, name: string, minLength: number): string | undefined {
  const value = env[name];
  if (!value) return undefined;
  if (value.length < minLength) {
    throw new CachecastError('CONFIG_INVALID', `${name} must be at least ${minLength} characters`);
  }
  return value;
}

/** Parses a variable that must be one of a fixed set of words, or returns the default. */
export function choiceVar<T extends string>(
  env: NodeJS.ProcessEnv,
  name: string,
  allowed: readonly T[],
  fallback: T,
): T {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new CachecastError('CONFIG_INVALID', `${name} must be one of ${allowed.join(', ')}`);
  }
  return raw as T;
}

/**
 * MATCH_QUEUE_TYPE (`classic` or `quorum`; default classic, what a Celery
 * client with no configuration declares): how `character.match`, its DLQ and
 * `character.grants` are declared. The match worker, the catalog and the
 * stack's Celery client read it; they and every Celery client must agree.
 */
export function matchQueueType(env: NodeJS.ProcessEnv): QueueType {
  return choiceVar(env, 'MATCH_QUEUE_TYPE', QUEUE_TYPES, 'classic');
}
