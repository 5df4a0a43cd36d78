/**
 * Every error cachecast raises carries a stable `code`, so callers can
 * `switch (err.code)` and services can map codes to HTTP statuses in one place.
 */
export type ErrorCode =
  // configuration (environment) and options (constructors)
  | 'CONFIG_INVALID'
  /** An option of the wrong type (thrown as a TypeError that carries this code). */
  | 'OPTION_TYPE'
  /** An option outside its range (thrown as a RangeError that carries this code). */
  | 'OPTION_RANGE'
  // bus
  | 'BUS_CLOSED'
  | 'BUS_PUBLISH_TIMEOUT'
  | 'BUS_PUBLISH_FAILED'
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
  /** Redis committed a revocation, but fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed it in time. */
  | 'REVOCATION_NOT_REPLICATED'
  // cache-aside (src/cache-aside)
  | 'CACHE_BAD_KEY'
  | 'CACHE_TIMEOUT'
  | 'CACHE_CONNECT_FAILED'
  /** The cache dropped the connection a call was on (or waiting for) because another call missed its deadline. */
  | 'CACHE_CONNECTION_DROPPED'
  | 'CACHE_CORRUPT_VALUE'
  // sources
  | 'SOURCE_FAILED'
  // lifecycle (src/util/lifecycle.ts)
  /** A part did not close within its bound; the parts after it were closed regardless. */
  | 'CLOSE_TIMEOUT'
  // the stack (src/stack/page.ts)
  /** The dashboard's page files are missing or incomplete (a broken install). */
  | 'STACK_PAGE_INVALID';

export class CachecastError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CachecastError';
    this.code = code;
  }
}

/**
 * Option errors stay TypeError / RangeError (what callers of rabbitmq-client
 * and jose expect at construction) and carry a code like every other error.
 */
export class OptionTypeError extends TypeError {
  readonly code = 'OPTION_TYPE' as const;
  constructor(message: string) {
    super(message);
    this.name = 'OptionTypeError';
  }
}

export class OptionRangeError extends RangeError {
  readonly code = 'OPTION_RANGE' as const;
  constructor(message: string) {
    super(message);
    this.name = 'OptionRangeError';
  }
}

/** Any error cachecast raised, narrowed by code when one is given. */
export function isCachecastError(
  err: unknown,
  code?: ErrorCode,
): err is CachecastError | OptionTypeError | OptionRangeError {
  const ours =
    err instanceof CachecastError || err instanceof OptionTypeError || err instanceof OptionRangeError;
  return ours && (code === undefined || err.code === code);
}

/** A short, secret-free description of any thrown value, for logs. */
export function describeError(err: unknown): string {
  if (isCachecastError(err)) return `${err.code}: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
