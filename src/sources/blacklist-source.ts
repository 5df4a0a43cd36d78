import { BLACKLIST_KEY_PREFIX, toBlacklistValue } from '../datasets/blacklist.ts';
import type { SourceChange } from '../replica/source.ts';
import type { RedisClient } from '../redis/client.ts';
import type { RedisProtocolKeys } from './redis-source.ts';
import { RedisKeySource } from './redis-source.ts';

/** Where the blacklist's version lives; outside `blacklist:*` so SCAN never sees it. */
export const BLACKLIST_VERSION_KEY = 'cachecast:version:blacklist';

/**
 * The blacklist's Redis keys beside `blacklist:{jti}` (one home for them: the
 * revocation writer and the source read the same names).
 */
export interface BlacklistKeys {
  prefix: string;
  versionKey: string;
  epochKey: string;
  digestKey: string;
  /** Recent revocations `version:exat:jti`, capped: a replica repairs a lost event from here. */
  logKey: string;
  /** Revocations committed whose event the broker has not confirmed yet. */
  pendingKey: string;
}

export const BLACKLIST_KEYS: BlacklistKeys = {
  prefix: BLACKLIST_KEY_PREFIX,
  versionKey: BLACKLIST_VERSION_KEY,
  epochKey: 'cachecast:epoch:blacklist',
  digestKey: 'cachecast:digest:blacklist',
  logKey: 'cachecast:log:blacklist',
  pendingKey: 'cachecast:outbox:blacklist',
};

/** Keys under another base (tests, several systems in one Redis database). */
export function blacklistKeys(base: string): BlacklistKeys {
  return {
    prefix: `${base}:blacklist:`,
    versionKey: `${base}:version`,
    epochKey: `${base}:epoch`,
    digestKey: `${base}:digest`,
    logKey: `${base}:log`,
    pendingKey: `${base}:pending`,
  };
}

/** A pending or logged revocation: `version:exat:jti`. */
export interface RevocationEntry {
  version: number;
  expireAt: number;
  jti: string;
}

export function parseRevocationEntry(entry: string): RevocationEntry | undefined {
  const first = entry.indexOf(':');
  const second = entry.indexOf(':', first + 1);
  if (first < 0 || second < 0) return undefined;
  const version = Number(entry.slice(0, first));
  const expireAt = Number(entry.slice(first + 1, second));
  const jti = entry.slice(second + 1);
  if (!Number.isSafeInteger(version) || !Number.isSafeInteger(expireAt) || !jti) return undefined;
  return { version, expireAt, jti };
}

function logChange(entry: string): SourceChange | undefined {
  const r = parseRevocationEntry(entry);
  return r && { version: r.version, event: { type: 'blacklist_added', jti: r.jti, expire_at: r.expireAt } };
}

/** The JWT blacklist's source of truth: `blacklist:{jti}` keys with expiries (seed 001). */
export function blacklistSource(
  client: RedisClient,
  options: { keys?: BlacklistKeys; scanCount?: number } = {},
): RedisKeySource<number> {
  const keys = options.keys ?? BLACKLIST_KEYS;
  const protocol: RedisProtocolKeys = {
    epochKey: keys.epochKey,
    digestKey: keys.digestKey,
    logKey: keys.logKey,
    pendingKey: keys.pendingKey,
    parseLogEntry: logChange,
  };
  return new RedisKeySource<number>({
    client,
    prefix: keys.prefix,
    versionKey: keys.versionKey,
    protocol,
    scanCount: options.scanCount ?? 1000,
    // Revocations are written with whole-second expiries (EXAT); a key written by
    // another writer without a TTL holds for as long as a value can.
    toValue: (expireAtMs) =>
      toBlacklistValue(expireAtMs === undefined ? Infinity : Math.round(expireAtMs / 1000)),
  });
}
