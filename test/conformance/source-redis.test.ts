import { BLACKLIST_EPOCH_S, blacklistDataset, toBlacklistValue } from '../../src/datasets/blacklist.ts';
import { blacklistKeys } from '../../src/datasets/blacklist.ts';
import { blacklistSource } from '../../src/sources/blacklist-source.ts';
import type { RedisNodeClient as RedisClient } from '../../src/redis/client.ts';
import { revokeInRedis, wipeBlacklist } from '../support/blacklist-writes.ts';
import { redisClient, uniqueName } from '../support/env.ts';
import { sourceConformance } from './source.conformance.ts';

const clients: RedisClient[] = [];
const bases: string[] = [];
const expiry = Math.floor(Date.now() / 1000) + 3600;

/** Writes as the auth service does: its revocation script. */
sourceConformance<number>('redis (blacklist)', {
  dataset: blacklistDataset,
  async create() {
    const client = await redisClient();
    clients.push(client);
    const base = uniqueName('t');
    bases.push(base);
    const keys = blacklistKeys(base);
    return {
      source: blacklistSource(client, { keys, scanCount: 100 }),
      set: async (key, value) => void (await revokeInRedis(client, keys, key, value + BLACKLIST_EPOCH_S)),
      overwrites: false,
      reset: () => wipeBlacklist(client, keys),
    };
  },
  sample: (i) => [
    i === 501 ? 'jti-500' : `jti-${i}`,
    toBlacklistValue(expiry + (i === 501 ? 60 : 0) + (i % 97) * 10),
  ],
  teardown: async () => {
    const client = clients[0];
    if (client) {
      for (const base of bases) {
        for await (const keys of client.scanIterator({ MATCH: `${base}:*`, COUNT: 1000 })) {
          if (keys.length) await client.del(keys);
        }
      }
    }
    await Promise.all(clients.map((c) => c.quit()));
  },
});
