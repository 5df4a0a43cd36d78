/**
 * The one place a broker connection is opened: every user (the fanout bus,
 * the match worker, the catalog's grants path, the stack's Celery client)
 * gets the same heartbeat, reconnect backoff and timeouts unless it says
 * otherwise, instead of whatever the client library defaults to.
 */
import { Connection } from 'rabbitmq-client';
import { countOption, msOption, stringOption } from '../options.ts';
import type { AmqpEndpoints } from './url.ts';
import { parseAmqpUrls } from './url.ts';

export type { Connection } from 'rabbitmq-client';

export interface AmqpConnectionOptions {
  /** One URL or several (comma-separated or an array): the nodes of a cluster. */
  url: string | readonly string[];
  /** The connection's name in the broker's management UI. */
  name: string;
  /**
   * AMQP heartbeat in seconds; two missed heartbeats mark the connection dead.
   * @default 10
   */
  heartbeatSec?: number;
  /** Reconnect backoff (full jitter) step. @default 200 */
  retryLowMs?: number;
  /** Reconnect backoff ceiling. @default 5000 */
  retryHighMs?: number;
  /** How long one connection attempt (TCP and handshake) may take. @default 5000 */
  connectionTimeoutMs?: number;
  /**
   * How long a publish or declaration waits for the connection. Callers with
   * a publish timeout of their own set it at least that long, so a publish
   * fails with their error. @default 6000
   */
  acquireTimeoutMs?: number;
}

export interface ResolvedAmqpConnectionOptions {
  endpoints: AmqpEndpoints;
  name: string;
  heartbeatSec: number;
  retryLowMs: number;
  retryHighMs: number;
  connectionTimeoutMs: number;
  acquireTimeoutMs: number;
}

/** Merges the defaults and checks every option once (OptionTypeError / OptionRangeError, CONFIG_INVALID for URLs). */
export function normalizeAmqpConnectionOptions(
  options: AmqpConnectionOptions,
): ResolvedAmqpConnectionOptions {
  return {
    endpoints: parseAmqpUrls(options.url),
    name: stringOption('name', options.name),
    heartbeatSec: countOption('heartbeatSec', options.heartbeatSec, 10, 1),
    retryLowMs: msOption('retryLowMs', options.retryLowMs, 200, 1),
    retryHighMs: msOption('retryHighMs', options.retryHighMs, 5000, 1),
    connectionTimeoutMs: msOption('connectionTimeoutMs', options.connectionTimeoutMs, 5000, 1),
    acquireTimeoutMs: msOption('acquireTimeoutMs', options.acquireTimeoutMs, 6000, 1),
  };
}

/**
 * Opens (in the background: the client connects and reconnects by itself) a
 * connection with the normalized options. An 'error' listener is attached so
 * a connection error never crashes the process; callers add their own to log.
 */
export function openAmqpConnection(
  options: AmqpConnectionOptions | ResolvedAmqpConnectionOptions,
): Connection {
  const o = 'endpoints' in options ? options : normalizeAmqpConnectionOptions(options);
  const connection = new Connection({
    url: o.endpoints.url,
    hosts: o.endpoints.hosts,
    heartbeat: o.heartbeatSec,
    retryLow: o.retryLowMs,
    retryHigh: o.retryHighMs,
    connectionTimeout: o.connectionTimeoutMs,
    acquireTimeout: o.acquireTimeoutMs,
    connectionName: o.name,
    noDelay: true,
  });
  connection.on('error', () => undefined);
  return connection;
}

/** Whether a value is a connection (one given by a caller, as opposed to URLs to open one with). */
export function isAmqpConnection(value: unknown): value is Connection {
  return value instanceof Connection;
}
