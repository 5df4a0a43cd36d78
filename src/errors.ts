/**
 * Every error cachecast raises carries a stable `code`, so callers can
 * `switch (err.code)` and services can map codes to HTTP statuses in one place.
 */
export type ErrorCode =
  // configuration and options
  | 'CONFIG_INVALID'
  // bus
  | 'BUS_CLOSED'
  | 'BUS_PUBLISH_TIMEOUT'
  | 'BUS_PUBLISH_FAILED'
  | 'BUS_SUBSCRIBE_FAILED'
  // events
  | 'EVENT_TOO_LARGE'
  | 'EVENT_BAD_CONTENT_TYPE'
  | 'EVENT_BAD_JSON'
  | 'EVENT_UNSIGNED'
  | 'EVENT_BAD_SIGNATURE'
  | 'EVENT_UNKNOWN_TYPE'
  | 'EVENT_BAD_SHAPE'
  // replica
  | 'REPLICA_UNAVAILABLE'
  | 'REPLICA_CLOSED'
  | 'REPLICA_UNKNOWN_INDEX'
  // auth
  | 'JWT_JWKS_FAILED'
  // cache-aside (src/cache-aside)
  | 'CACHE_BAD_KEY'
  | 'CACHE_TIMEOUT'
  | 'CACHE_CONNECT_FAILED'
  /** The cache dropped the connection a call was on (or waiting for) because another call missed its deadline. */
  | 'CACHE_CONNECTION_DROPPED'
  | 'CACHE_CORRUPT_VALUE'
  // sources and outbox
  | 'SOURCE_FAILED'
  | 'OUTBOX_FAILED';

export class CachecastError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CachecastError';
    this.code = code;
  }
}

export function isCachecastError(err: unknown, code?: ErrorCode): err is CachecastError {
  return err instanceof CachecastError && (code === undefined || err.code === code);
}

/** A short, secret-free description of any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (err instanceof CachecastError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
