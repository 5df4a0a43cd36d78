import type { BlacklistKeys } from '../datasets/blacklist.ts';
import { BLACKLIST_KEYS, toBlacklistValue } from '../datasets/blacklist.ts';
import type { SourceChange } from '../replica/source.ts';
import type { RedisClient } from '../redis/client.ts';
import type { RedisProtocolKeys } from './redis-source.ts';
import { RedisKeySource } from './redis-source.ts';

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
