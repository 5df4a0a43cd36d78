import { BLACKLIST_KEY_PREFIX, toBlacklistValue } from '../datasets/blacklist.ts';
import type { RedisClient } from './redis-source.ts';
import { RedisKeySource } from './redis-source.ts';

/** Where the blacklist's version lives; outside `blacklist:*` so SCAN never sees it. */
export const BLACKLIST_VERSION_KEY = 'cachecast:version:blacklist';

/** The JWT blacklist's source of truth: `blacklist:{jti}` keys with TTLs (seed 001). */
export function blacklistSource(
  client: RedisClient,
  options: { prefix?: string; versionKey?: string; scanCount?: number } = {},
): RedisKeySource<number> {
  return new RedisKeySource<number>({
    client,
    prefix: options.prefix ?? BLACKLIST_KEY_PREFIX,
    versionKey: options.versionKey ?? BLACKLIST_VERSION_KEY,
    scanCount: options.scanCount ?? 1000,
    // Revocations are written with whole-second expiries (EX/EXAT); now + PTTL lands a
    // few ms off it, so round to the nearest second. Without a TTL: the longest we can hold.
    toValue: (expireAtMs) =>
      toBlacklistValue(expireAtMs === undefined ? Infinity : Math.round(expireAtMs / 1000)),
  });
}
