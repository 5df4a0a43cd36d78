import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createClient } from 'redis';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { defineCacheKeys } from '../../src/cache-aside/cache-key.ts';
import { BLACKLIST_KEYS } from '../../src/datasets/blacklist.ts';
import { silentLogger } from '../../src/logger.ts';
import { connectRedis } from '../../src/redis/client.ts';
import { parseSentinels } from '../../src/redis/target.ts';
import { startCatalog } from '../../src/services/catalog/main.ts';
import type { UserCollection } from '../../src/services/catalog/user-collections.ts';
import { startMatchWorkerService } from '../../src/services/match-worker/main.ts';
import { CeleryClient } from '../../src/stack/celery-client.ts';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  check,
  login,
  logout,
  replicaState,
  startAuthMember,
  startAuthzMember,
  TEST_JWT_SECRET,
} from '../support/authz-fleet.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { envLines, sentinelScript } from '../support/clusters.ts';
import { DATABASE_URL, RABBITMQ_URL, testDatabase, uniqueName } from '../support/env.ts';
import { claims, hs256 } from '../support/jwt-tokens.ts';
import { character } from '../support/replica-fixtures.ts';
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

  it("Celery results (Python's Celery on a Sentinel result backend, and the stack's client) and users' collections work after a failover", async () => {
    const db = await testDatabase();
    running.push({ close: () => db.drop() });
    const pet = character('pet', '플라스틱', { id: randomUUID() });
    await upsertCharacter(db.pool, pet);
    const database = new URL(DATABASE_URL);
    database.searchParams.set('options', `-c search_path=${db.schema}`);
    const env = {
      ...sentinelEnv,
      RABBITMQ_URL,
      // With Sentinels, the URL gives only the database (and credentials).
      REDIS_URL: 'redis://127.0.0.1:6379/1',
      DATABASE_URL: database.toString(),
      HOST: '127.0.0.1',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'silent',
    };
    const worker = await startMatchWorkerService(env);
    running.push(worker);
    const catalog = await startCatalog({ ...env, PORT: '0', JWT_SECRET: TEST_JWT_SECRET });
    running.push(catalog);
    await waitFor(() => worker.worker.consuming, 'the match worker consuming', 30_000);
    await waitFor(
      async () => (await fetch(`${catalog.endpoints.admin}/readyz`)).status === 200,
      'the catalog ready',
      30_000,
    );

    // Celery's own Sentinel result backend (redis-py's Sentinel client), on the database of REDIS_URL.
    const redisDb = new URL(env.REDIS_URL).pathname;
    const backend = sentinelEnv
      .REDIS_SENTINELS!.split(',')
      .map((node) => `sentinel://${node}${redisDb}`)
      .join(';');
    const classification = { major_category: '재활용', middle_category: '플라스틱', minor_category: 'PET' };
    const matchTask = async (user: string) => {
      const { stdout } = await promisify(execFile)(
        '/usr/bin/python3',
        [
          join(import.meta.dirname, '../interop/celery_send.py'),
          RABBITMQ_URL,
          backend,
          '--sentinel-master',
          sentinelEnv.REDIS_SENTINEL_NAME!,
          '--user-id',
          user,
          '--timeout',
          '20',
          JSON.stringify(classification),
        ],
        { timeout: 60_000 },
      );
      return JSON.parse(stdout.trim()) as { ok: boolean; result?: { code?: string }; error?: string };
    };
    const collection = async (user: string): Promise<string[]> => {
      const res = await fetch(`${catalog.endpoints.http}/api/v1/users/${user}/characters`, {
        headers: { authorization: `Bearer ${hs256(claims({ sub: user }))}` },
      });
      assert.equal(res.status, 200, `the collection of ${user}: ${res.status}`);
      return ((await res.json()) as UserCollection).characters.map((c) => c.code);
    };
    // The stack's Node client too (the dashboard's match), one client across the failover.
    const node = new CeleryClient({
      rabbitmqUrl: RABBITMQ_URL,
      redis: { url: env.REDIS_URL, sentinels: parseSentinels(sentinelEnv.REDIS_SENTINELS!) },
    });
    running.push(node);
    const nodeMatch = async (when: string): Promise<void> => {
      const { meta } = await node.match(classification, { timeoutMs: 20_000 });
      assert.equal(meta.status, 'SUCCESS', `the stack's client ${when}`);
    };
    /** A task answered through Celery's backend, and its grant in the (cached) collection. */
    const granted = async (user: string, when: string): Promise<void> => {
      assert.deepEqual(await collection(user), [], `${user} has nothing yet (${when})`);
      const answer = await matchTask(user);
      assert.equal(answer.ok, true, `the task's result through Celery's backend (${when}): ${answer.error}`);
      assert.equal(answer.result?.code, 'pet');
      await waitFor(
        async () => (await collection(user)).includes('pet'),
        `the grant in ${user}'s collection ${when} (the cached empty one invalidated)`,
        20_000,
      );
    };

    const before = uniqueName('sentinel-celery-before');
    await granted(before, 'before the failover');
    await nodeMatch('before the failover');
    await sentinelScript('failover');
    await granted(uniqueName('sentinel-celery-after'), 'after the failover');
    await nodeMatch('after the failover');
    assert.deepEqual(await collection(before), ['pet'], 'a collection from before still answers');
  });
});
