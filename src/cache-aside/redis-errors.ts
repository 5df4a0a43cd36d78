import {
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  DisconnectsClientError,
  ErrorReply,
  ReconnectStrategyError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError,
} from 'redis';
import { isCachecastError } from '../errors.ts';

/**
 * What went wrong with a Redis call, in the seed's terms. Only the first four
 * count toward the circuit breaker (the seed's `target_exc_types`:
 * `ConnectionError`, `TimeoutError`, `OutOfMemoryError`, `ClusterDownError`);
 * `other` (a wrong type, a corrupt value, a script error) is Redis answering,
 * so it says nothing about Redis being down. `dropped` (CACHE_CONNECTION_DROPPED)
 * is neither: the call was in flight on a connection the cache dropped because
 * *another* call missed its deadline; that call counts (a timeout, under its
 * own key), this one does not.
 */
export type RedisErrorKind =
  'connection' | 'timeout' | 'out_of_memory' | 'cluster_down' | 'other' | 'dropped';

const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_SOCKET_CLOSED',
]);

/**
 * Maps a node-redis (or socket, or cache-aside) error to its kind. Replies
 * that redis-py raises as a `ConnectionError` subclass count as connection
 * errors too: `LOADING` (BusyLoadingError) and `NOAUTH`/`WRONGPASS`
 * (AuthenticationError).
 */
export function classifyRedisError(err: unknown): RedisErrorKind {
  if (isCachecastError(err, 'CACHE_TIMEOUT')) return 'timeout';
  if (isCachecastError(err, 'CACHE_CONNECTION_DROPPED')) return 'dropped';
  if (isCachecastError(err, 'CACHE_CONNECT_FAILED')) return 'connection';
  if (err instanceof TimeoutError || err instanceof SocketTimeoutError) return 'timeout';
  if (err instanceof ErrorReply) {
    const prefix = err.message.split(' ', 1)[0];
    switch (prefix) {
      case 'OOM':
        return 'out_of_memory';
      case 'CLUSTERDOWN':
        return 'cluster_down';
      case 'LOADING':
      case 'NOAUTH':
      case 'WRONGPASS':
        return 'connection';
      default:
        return 'other';
    }
  }
  if (
    err instanceof ConnectionTimeoutError ||
    err instanceof ClientClosedError ||
    err instanceof ClientOfflineError ||
    err instanceof SocketClosedUnexpectedlyError ||
    err instanceof DisconnectsClientError ||
    err instanceof ReconnectStrategyError
  ) {
    return 'connection';
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return 'connection';
  return 'other';
}

/** The error's class name, for alerts and logs (`SocketClosedUnexpectedlyError`, `CachecastError[CACHE_TIMEOUT]`). */
export function errorTypeName(err: unknown): string {
  if (isCachecastError(err)) return `CachecastError[${err.code}]`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const name = err.constructor?.name || err.name || 'Error';
    return typeof code === 'string' ? `${name}[${code}]` : name;
  }
  return typeof err;
}
