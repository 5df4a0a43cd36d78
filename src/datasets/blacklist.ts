import { CachecastError } from '../errors.ts';
import type { Change } from '../events/event.ts';
import type { Dataset } from '../replica/dataset.ts';

export const BLACKLIST_TOPIC = 'auth.blacklist.events';
export const BLACKLIST_KEY_PREFIX = 'blacklist:';

/** Where the blacklist's version lives; outside `blacklist:*` so SCAN never sees it. */
export const BLACKLIST_VERSION_KEY = 'cachecast:version:blacklist';

/**
 * The blacklist's Redis keys beside `blacklist:{jti}` (one home for them: the
 * revocation writer, the source and the ext-authz check read the same names).
 */
export interface BlacklistKeys {
  prefix: string;
  versionKey: string;
  epochKey: string;
  digestKey: string;
  /** Recent revocations `version:exat:jti`, capped: a replica repairs a lost event from here. */
  logKey: string;
  /** Revocations committed whose event the broker has not confirmed yet (the Redis outbox). */
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

/**
 * Stored value: expire_at in seconds relative to this base, so it is a small
 * integer (stored unboxed in the Map) on every V8 build: with pointer
 * compression small integers stop at 2^30, which unix seconds passed in 2004;
 * an offset from 2024 stays below it until 2058. (Stock Node on x64 has 31-bit
 * small integers, where unix seconds would fit until 2038: the bench shows
 * both at 85 B per entry.)
 */
export const BLACKLIST_EPOCH_S = 1_704_067_200; // 2024-01-01T00:00:00Z
const MAX_OFFSET = 2 ** 30 - 1;
/** The latest expiry a replica can hold exactly (2058): writers cap revocations there. */
export const BLACKLIST_MAX_EXPIRE_AT_S = BLACKLIST_EPOCH_S + MAX_OFFSET;

export function toBlacklistValue(expireAtSeconds: number): number {
  return Math.min(MAX_OFFSET, Math.max(0, Math.ceil(expireAtSeconds) - BLACKLIST_EPOCH_S));
}

export function blacklistExpireAtMs(value: number): number {
  return (value + BLACKLIST_EPOCH_S) * 1000;
}

/** Token ids are opaque strings; bound them so a hostile event cannot bloat memory. */
export function isValidJti(jti: unknown): jti is string {
  return typeof jti === 'string' && jti.length > 0 && jti.length <= 256;
}

/** The JWT revocation list (seed 001): jti -> expiry. Fails closed while degraded. */
export const blacklistDataset: Dataset<number> = {
  name: 'blacklist',
  topic: BLACKLIST_TOPIC,
  degradedReads: 'source',
  commutative: true,
  maxEventBytes: 64 * 1024,
  expireAt: blacklistExpireAtMs,
  // What the revocation script hashes: the jti and the EXAT it set (redis-source.ts).
  digestText: (jti, value) => `${jti}|${value + BLACKLIST_EPOCH_S}`,
  encode(change) {
    if (change.kind !== 'set') throw new RangeError(`the blacklist has no ${change.kind} event`);
    return { type: 'blacklist_added', jti: change.key, expire_at: change.value + BLACKLIST_EPOCH_S };
  },
  decode(event): Change<number> {
    if (event.type !== 'blacklist_added') {
      throw new CachecastError(
        'EVENT_UNKNOWN_TYPE',
        `unknown blacklist event type ${JSON.stringify(event.type)}`,
      );
    }
    if (!isValidJti(event.jti))
      throw new CachecastError('EVENT_BAD_SHAPE', 'blacklist_added needs a string "jti"');
    const expireAt = event.expire_at;
    if (typeof expireAt !== 'number' || !Number.isFinite(expireAt) || expireAt <= 0) {
      throw new CachecastError('EVENT_BAD_SHAPE', 'blacklist_added needs "expire_at" in unix seconds');
    }
    return { kind: 'set', key: event.jti, value: toBlacklistValue(expireAt) };
  },
};
