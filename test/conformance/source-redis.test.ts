import { blacklistSource } from '../../src/sources/blacklist-source.ts';
import { toBlacklistValue } from '../../src/datasets/blacklist.ts';
import { redisClient, uniqueName } from '../support/env.ts';
import type { RedisClient } from '../../src/sources/redis-source.ts';
import { sourceConformance } from './source.conformance.ts';

const clients: RedisClient[] = [];
const prefixes: string[] = [];
const expiry = Math.floor(Date.now() / 1000) + 3600;

/** Writes as the auth service does: SET with a TTL and INCR of the version in one MULTI. */
sourceConformance<number>('redis (blacklist)', {
  async create() {
    const client = await redisClient();
    clients.push(client);
    const base = uniqueName('t');
    prefixes.push(base);
    const prefix = `${base}:blacklist:`;
    const versionKey = `${base}:version`;
    return {
      source: blacklistSource(client, { prefix, versionKey, scanCount: 100 }),
      set: async (key, value) => {
        const expireAtS = value + 1_704_067_200;
        await client
          .multi()
          .set(prefix + key, '1', { EXAT: expireAtS })
          .incr(versionKey)
          .exec();
      },
      delete: async (key) => {
        await client
          .multi()
          .del(prefix + key)
          .incr(versionKey)
          .exec();
      },
    };
  },
  sample: (i) => [i === 501 ? 'jti-500' : `jti-${i}`, toBlacklistValue(expiry + (i === 501 ? 60 : 0))],
  teardown: async () => {
    const client = clients[0];
    if (client) {
      for (const base of prefixes) {
        for await (const keys of client.scanIterator({ MATCH: `${base}:*`, COUNT: 1000 })) {
          if (keys.length) await client.del(keys);
        }
      }
    }
    await Promise.all(clients.map((c) => c.quit()));
  },
});
