import { DIGEST_BUCKET_S } from '../../src/replica/digest.ts';
import type { BlacklistKeys } from '../../src/datasets/blacklist.ts';
import { newEpoch } from '../../src/sources/memory-source.ts';
import { epochServerKey, runRevokeScript } from '../../src/sources/redis-scripts.ts';
import type { RedisClient } from '../../src/redis/client.ts';
import { scanKeys } from '../../src/redis/client.ts';

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
  return runRevokeScript(redis, keys, {
    jti,
    expireAt: expireAtS,
    newEpoch: newEpoch(),
    logSize: 10_000,
    bucketS: DIGEST_BUCKET_S,
  });
}

/** Every key of a blacklist under `keys` (a Redis restart that lost them all). */
export async function wipeBlacklist(redis: RedisClient, keys: BlacklistKeys): Promise<void> {
  const all = [
    keys.versionKey,
    keys.epochKey,
    epochServerKey(keys),
    keys.digestKey,
    keys.logKey,
    keys.pendingKey,
  ];
  for await (const batch of scanKeys(redis, `${keys.prefix}*`)) all.push(...batch);
  await redis.del(all);
}
