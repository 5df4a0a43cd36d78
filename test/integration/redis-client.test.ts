import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/logger.ts';
import { connectRedis } from '../../src/redis/client.ts';
import { REDIS_URL, redisClient, uniqueName } from '../support/env.ts';

async function connectionsNamed(name: string): Promise<number> {
  const admin = await redisClient();
  try {
    const list = await admin.clientList();
    return list.filter((c) => c.name === name).length;
  } finally {
    await admin.close();
  }
}

describe('connectRedis', () => {
  it('close() right after the start, before the socket connected, leaves no connection behind', async () => {
    const name = uniqueName('closed-early');
    for (let i = 0; i < 5; i++) {
      const redis = connectRedis(REDIS_URL, silentLogger, name);
      await redis.close();
    }
    // A socket node-redis attached after destroy() would connect now, and stay.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await connectionsNamed(name), 0);
  });

  it('close() after the connection is up ends it', async () => {
    const name = uniqueName('closed-late');
    const redis = connectRedis(REDIS_URL, silentLogger, name);
    await redis.connected;
    assert.equal(await connectionsNamed(name), 1);
    await redis.close();
    assert.equal(await connectionsNamed(name), 0);
  });

  it('close() of a Sentinel client whose Sentinels are all unreachable does not wait for node-redis to give up', async () => {
    // Nothing listens on this port: node-redis retries for about 16 s before connected rejects.
    const redis = connectRedis(
      { url: REDIS_URL, sentinels: [{ host: '127.0.0.1', port: 1 }] },
      silentLogger,
      uniqueName('sentinel-unreachable'),
    );
    const closed = await Promise.race([
      redis.close().then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 8000)),
    ]);
    assert.equal(closed, true, 'close() returned before the rediscovery rounds ran out');
  });
});
