import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { defineCacheKeys } from '../../src/cache-aside/cache-key.ts';
import { BLACKLIST_KEYS } from '../../src/datasets/blacklist.ts';
import { silentLogger } from '../../src/logger.ts';
import { connectRedis } from '../../src/redis/client.ts';
import { parseSentinels } from '../../src/redis/target.ts';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  check,
  login,
  logout,
  replicaState,
  startAuthMember,
  startAuthzMember,
} from '../support/authz-fleet.ts';
import { envLines, sentinelScript } from '../support/clusters.ts';
import { delay, waitFor } from '../support/wait.ts';

// A master (6391), a replica (6392) and three Sentinels (26391-26393) from
// scripts/redis-sentinel.sh, started fresh for this file and removed after it.
// The data nodes keep nothing on disk, like the machine's Redis.
let sentinelEnv: Record<string, string>;
const running: Array<{ close(): Promise<void> }> = [];

before(async () => {
  await sentinelScript('down');
  sentinelEnv = envLines(await sentinelScript('up'));
});
after(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
  await sentinelScript('down');
});

function track(member: FleetMember): FleetMember {
  running.push(member.service);
  return member;
}

function jtiOf(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string };
  return payload.jti;
}

/** A plain client of the master the Sentinels name now. */
async function currentMaster() {
  const [host, port] = (await sentinelScript('master')).trim().split(':');
  const client = createClient({ socket: { host, port: Number(port) }, database: 1 });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

describe('Redis Sentinel: services follow failovers', () => {
  it('every logout answered 204 survives a planned failover, a killed master and another failover; the others are 503', async () => {
    const env = { ...sentinelEnv, REDIS_MIN_REPLICAS_ACK: '1', REDIS_REPLICAS_ACK_TIMEOUT_MS: '300' };
    const auth = track(await startAuthMember(env));
    const authz = track(await startAuthzMember(env));
    await waitFor(async () => (await replicaState(authz)) === 'ready', 'ext-authz ready', 20_000);

    const statuses = new Map<string, number>();
    let stop = false;
    let n = 0;
    const flow = async (): Promise<void> => {
      while (!stop) {
        const token = await login(auth, `sentinel-user-${n++}`);
        statuses.set(token, await logout(auth, token));
        await delay(2);
      }
    };
    const flows = [flow(), flow(), flow()];
    const phase = async (what: string, action: () => Promise<unknown>): Promise<void> => {
      const before = [...statuses.values()].filter((s) => s === 204).length;
      await action();
      // Logouts must go on answering 204 after each step (the services found the new master).
      await waitFor(
        () => [...statuses.values()].filter((s) => s === 204).length >= before + 20,
        `logouts answered 204 after ${what}`,
        20_000,
      );
    };
    try {
      await phase('the start', () => delay(300));
      await phase('a planned failover', () => sentinelScript('failover'));
      const killed = (await sentinelScript('master')).trim().split(':')[1]!;
      // The new master has no replica until the killed one is back: logouts must be refused (503).
      await sentinelScript('kill-master');
      await waitFor(() => [...statuses.values()].includes(503), 'a logout refused without a replica', 20_000);
      await phase('the killed master came back as a replica', () => sentinelScript('restart', killed));
      await phase('another failover', () => sentinelScript('failover'));
    } finally {
      stop = true;
      await Promise.all(flows);
    }

    const answered = [...statuses.entries()];
    const others = answered.filter(([, s]) => s !== 204 && s !== 503);
    assert.deepEqual(others, [], 'every logout is 204 or 503, never 500');
    const revoked = answered.filter(([, s]) => s === 204).map(([t]) => t);
    assert.ok(revoked.length >= 80, `${revoked.length} logouts answered 204`);

    const master = await currentMaster();
    try {
      const present = await Promise.all(revoked.map((t) => master.exists(BLACKLIST_KEYS.prefix + jtiOf(t))));
      const lost = revoked.filter((_, i) => present[i] !== 1);
      assert.deepEqual(lost.map(jtiOf), [], 'no revocation answered 204 is missing from the master');
    } finally {
      master.destroy();
    }
    // The running ext-authz (its replica resynced on the new epoch) and one started now refuse them all.
    const fresh = track(await startAuthzMember(env));
    await waitFor(async () => (await replicaState(fresh)) === 'ready', 'the new ext-authz ready', 20_000);
    for (const member of [authz, fresh]) {
      await waitFor(
        async () => (await replicaState(member)) === 'ready',
        'ext-authz ready after the failovers',
        20_000,
      );
      const accepted: string[] = [];
      for (const token of revoked)
        if ((await check(member, token)).status !== 401) accepted.push(jtiOf(token));
      assert.deepEqual(accepted, [], 'every revoked token refused');
    }
  });

  it("cache-aside (users' collections) and a long-lived client write to the new master after a failover", async () => {
    const sentinels = parseSentinels(sentinelEnv.REDIS_SENTINELS!);
    const prefix = `sentinel-test-${Date.now()}`;
    const Keys = defineCacheKeys({ PROFILE: { template: 'profile:{user_id}', ttlMs: 60_000 } });
    const cache = new CacheAside({
      redisUrl: 'redis://127.0.0.1:6379/1',
      redisSentinels: sentinels,
      keyPrefix: prefix,
      commandTimeoutMs: 1000,
      logger: silentLogger,
    });
    running.push(cache);
    const managed = connectRedis(
      { url: 'redis://127.0.0.1:6379/1', sentinels },
      silentLogger,
      'sentinel-test',
    );
    running.push(managed);
    await managed.connected;
    const key = `${prefix}:plain`;
    await managed.client.set(key, 'before');
    let loads = 0;
    const read = (user: string) =>
      cache.getWithFallback(Keys.PROFILE, { user_id: user }, () => ({ n: ++loads }));
    await read('ann');
    await cache.settled();
    await sentinelScript('failover');
    // The long-lived client follows the Sentinels; cache-aside's next connection asks them (the
    // old one, to a master turned replica, answers writes with READONLY and is dropped).
    await waitFor(
      async () => {
        try {
          await managed.client.set(key, 'after');
        } catch {
          return false;
        }
        const master = await currentMaster();
        try {
          return (await master.get(key)) === 'after';
        } finally {
          master.destroy();
        }
      },
      'a write through the Sentinel client after the failover',
      20_000,
    );
    let user = 0;
    await waitFor(
      async () => {
        await read(`bob-${++user}`);
        await cache.settled();
        const master = await currentMaster();
        try {
          return (await master.keys(`${prefix}:*profile:bob-${user}`)).length === 1;
        } finally {
          master.destroy();
        }
      },
      'cache-aside writing back to the new master',
      20_000,
    );
  });
});
