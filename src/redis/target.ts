import { CachecastError } from '../errors.ts';

/** One Redis server (or Sentinel) address. */
export interface RedisNode {
  host: string;
  port: number;
}

/**
 * Where a service finds Redis: one server at `url`, or, with `sentinels`, the
 * master of the group `sentinelName` that those Sentinels watch (the URL then
 * gives only the database, user and password, and TLS).
 */
export interface RedisTarget {
  url: string;
  sentinels?: readonly RedisNode[] | undefined;
  /** @default 'mymaster' */
  sentinelName?: string | undefined;
}

export const DEFAULT_SENTINEL_NAME = 'mymaster';

/** A target given as a plain URL, or as is. */
export function toRedisTarget(target: string | RedisTarget): RedisTarget {
  return typeof target === 'string' ? { url: target } : target;
}

/**
 * REDIS_SENTINELS: `host:port,host:port,...` (IPv6 as `[::1]:26379`). Errors
 * name the entry's position, never a value that might be a secret.
 */
export function parseSentinels(value: string): RedisNode[] {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new CachecastError('CONFIG_INVALID', 'REDIS_SENTINELS is empty');
  if (entries.length > 32)
    throw new CachecastError('CONFIG_INVALID', 'REDIS_SENTINELS lists more than 32 nodes');
  return entries.map((entry, i) => {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65_535) {
      throw new CachecastError(
        'CONFIG_INVALID',
        `REDIS_SENTINELS entry ${i + 1} must be host:port (a hostname or IP, and a port from 1 to 65535)`,
      );
    }
    return { host: (m[1] ?? m[2])!, port };
  });
}

/** The parts of a redis:// URL a Sentinel-found master connects with. */
export function urlCredentials(url: string): {
  database: number;
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
} {
  const u = new URL(url);
  const db = u.pathname.replace(/^\//, '');
  return {
    database: db ? Number(db) : 0,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    tls: u.protocol === 'rediss:',
  };
}
