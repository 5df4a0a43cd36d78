import { DIGEST_BUCKET_S } from '../../src/replica/digest.ts';
import type { BlacklistKeys } from '../../src/datasets/blacklist.ts';
import { newEpoch } from '../../src/sources/memory-source.ts';
import { REVOKE_SCRIPT } from '../../src/sources/redis-scripts.ts';
import type { RedisClient } from '../../src/redis/client.ts';

/**
 * A logout exactly as the auth service commits it (the same script): the key,
 * the version, the epoch, the digest, the change log and the pending event.
 * Returns the version and epoch, or undefined when the jti was already revoked.
 */
export async function revokeInRedis(
  redis: RedisClient,
  keys: BlacklistKeys,
  jti: string,
  expireAtS: number,
): Promise<{ version: number; epoch: string } | undefined> {
  const result = await redis.eval(REVOKE_SCRIPT, {
    keys: [keys.prefix + jti, keys.versionKey, keys.pendingKey, keys.epochKey, keys.digestKey, keys.logKey],
    arguments: [String(expireAtS), jti, newEpoch(), '10000', String(DIGEST_BUCKET_S)],
  });
  if (!Array.isArray(result)) return undefined;
  const [version, epoch] = result as [number, string];
  return { version: Number(version), epoch };
}

/** Every key of a blacklist under `keys` (a Redis restart that lost them all). */
export async function wipeBlacklist(redis: RedisClient, keys: BlacklistKeys): Promise<void> {
  const all = [keys.versionKey, keys.epochKey, keys.digestKey, keys.logKey, keys.pendingKey];
  for await (const batch of redis.scanIterator({ MATCH: `${keys.prefix}*`, COUNT: 1000 })) all.push(...batch);
  await redis.del(all);
}
