// The four schedules that broke the sync protocol before epochs, content
// digests, sequencing and heartbeats, against the real services, RabbitMQ and
// Redis. Each asserts the bound: once a logout has answered, no ext-authz
// instance lets the token through more than 1 s later.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { after, afterEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { BLACKLIST_TOPIC } from '../../src/datasets/blacklist.ts';
import type { ReplicaStats } from '../../src/replica/stats.ts';
import { BLACKLIST_KEYS } from '../../src/datasets/blacklist.ts';
import { blacklistSource } from '../../src/sources/blacklist-source.ts';
import type { RedisClient } from '../../src/redis/client.ts';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  adminJson,
  check,
  login,
  logout,
  startAuthMember,
  startAuthzMember,
} from '../support/authz-fleet.ts';
import { revokeInRedis } from '../support/blacklist-writes.ts';
import { RABBITMQ_URL, redisClient } from '../support/env.ts';
import { rabbitProxy, urlThrough } from '../support/rabbit.ts';
import { freePort, killRedisServer, startRedisServer } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const BOUND_MS = 1000;
const running: Array<{ close(): Promise<void> }> = [];
const servers: ChildProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
});
after(async () => {
  for (const server of servers) await killRedisServer(server);
});

/** A Redis of this test's own (it restarts one, and loads another with many keys). */
async function ownRedis(): Promise<{ url: string; port: number; client: RedisClient }> {
  const port = await freePort();
  servers.push(await startRedisServer(port));
  const url = `redis://127.0.0.1:${port}/0`;
  const client = await redisClient(url);
  running.push({ close: () => client.close() });
  return { url, port, client };
}

function track(member: FleetMember): FleetMember {
  running.push(member.service);
  return member;
}

async function blacklistStats(authz: FleetMember): Promise<ReplicaStats> {
  const replicas = (await (await fetch(`${authz.admin}/replicas`)).json()) as ReplicaStats[];
  return replicas.find((r) => r.dataset === 'blacklist')!;
}

/**
 * Checks every logged-out token against every ext-authz instance, over and
 * over, from the moment its logout answered: a 200 later than BOUND_MS after
 * that is a violation of the protocol's promise.
 */
class BoundMonitor {
  readonly violations: string[] = [];
  readonly #tokens: Array<{ token: string; at: number }> = [];
  #running: Promise<void> | undefined;
  #stopped = false;
  checks = 0;

  constructor(private readonly members: FleetMember[]) {}

  /** Checks this instance too (from now on). */
  watch(member: FleetMember): this {
    this.members.push(member);
    return this;
  }

  /** A logout answered just now. */
  add(token: string): void {
    this.#tokens.push({ token, at: performance.now() });
  }

  start(): this {
    this.#running = (async () => {
      while (!this.#stopped) {
        await this.#sweep();
        await new Promise((r) => setTimeout(r, 10));
      }
      await this.#sweep();
    })();
    return this;
  }

  async #sweep(): Promise<void> {
    for (const { token, at } of [...this.#tokens]) {
      for (const member of this.members) {
        const result = await check(member, token);
        this.checks++;
        const late = performance.now() - at;
        if (result.status === 200 && late > BOUND_MS) {
          this.violations.push(
            `${member.http} let a revoked token through ${late.toFixed(0)} ms after its logout`,
          );
        }
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }
}

async function logoutOk(auth: FleetMember, token: string): Promise<void> {
  // Redis may still be coming back: a logout answers 204 once it committed, 503 before.
  await waitFor(async () => (await logout(auth, token)) === 204, 'logout committed', 10_000, 50);
}

describe('sync protocol against the real services: the four schedules', () => {
  it('two auth instances revoking concurrently while an ext-authz starts over a large blacklist: one load, ready, stays ready', async () => {
    const redis = await ownRedis();
    const nowS = Math.floor(Date.now() / 1000);
    // 50,000 revocations already there, written as auth writes them.
    for (let i = 0; i < 50_000; i += 1000) {
      await Promise.all(
        Array.from({ length: 1000 }, (_, j) =>
          revokeInRedis(redis.client, BLACKLIST_KEYS, `old-${i + j}`, nowS + 600 + ((i + j) % 300)),
        ),
      );
    }
    const env = { REDIS_URL: redis.url };
    const auths = [track(await startAuthMember(env)), track(await startAuthMember(env))];
    let stop = false;
    const revoked: string[] = [];
    const monitor = new BoundMonitor([]);
    // Both instances log tokens out at once, in pairs: their events cross on the wire.
    const traffic = (async () => {
      for (let round = 0; !stop; round++) {
        const tokens = await Promise.all(auths.map((a, i) => login(a, `u-${round}-${i}`)));
        await Promise.all(tokens.map((t, i) => logoutOk(auths[i]!, t)));
        for (const t of tokens) {
          revoked.push(t);
          monitor.add(t);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const authz = track(await startAuthzMember(env));
    monitor.watch(authz).start();
    await waitFor(async () => (await blacklistStats(authz)).state === 'ready', 'proven current', 5000);
    const states: string[] = [];
    const watching = (async () => {
      while (!stop) {
        const stats = await blacklistStats(authz);
        states.push(stats.state === 'ready' ? 'ready' : JSON.stringify(stats));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await waitFor(() => revoked.length >= 200, '200 concurrent logouts during the test', 30_000);
    stop = true;
    await Promise.all([traffic, watching]);
    await monitor.stop();
    assert.deepEqual(monitor.violations, []);
    for (const token of revoked) assert.equal((await check(authz, token)).status, 401);
    const stats = await blacklistStats(authz);
    assert.equal(stats.resyncs, 1, 'one load: crossing events never restart it');
    assert.ok(
      states.every((s) => s === 'ready'),
      `stayed ready (${states.filter((s) => s !== 'ready').length} of ${states.length} samples not: ${states.find((s) => s !== 'ready')})`,
    );
    assert.ok(stats.size >= 50_000);
  });

  it('Redis restarted empty, then a logout: a new epoch, and the logout is refused within the bound', async () => {
    const redis = await ownRedis();
    const env = { REDIS_URL: redis.url };
    const auth = track(await startAuthMember(env));
    const authz = track(await startAuthzMember(env));
    const before = await login(auth, 'before');
    await logoutOk(auth, before);
    await waitFor(async () => (await check(authz, before)).status === 401, 'refused', 5000);
    const epoch = (await blacklistStats(authz)).epoch;

    await killRedisServer(servers.pop()!);
    servers.push(await startRedisServer(redis.port)); // no persistence: everything is gone
    const token = await login(auth, 'after-restart');
    const monitor = new BoundMonitor([authz]).start();
    await logoutOk(auth, token); // version 1 of a new epoch: never "a duplicate" of the old 1
    monitor.add(token);
    await waitFor(async () => (await blacklistStats(authz)).epoch !== epoch, 'the new epoch loaded', 10_000);
    await new Promise((r) => setTimeout(r, BOUND_MS + 200));
    await monitor.stop();
    assert.deepEqual(monitor.violations, []);
    assert.equal((await check(authz, token)).status, 401);
    // Ready again: at once on an idle machine; a starved event loop may first say degraded
    // (it could not prove itself current in time), which is the safe answer, not a failure.
    await waitFor(async () => (await blacklistStats(authz)).state === 'ready', 'ready again', 5000);
    const stats = await blacklistStats(authz);
    assert.ok(stats.resyncs >= 2);
  });

  it('a forged event with the next version (from kombu), then a real logout: found and repaired, the logout refused within the bound', async () => {
    const redis = await ownRedis();
    const env = { REDIS_URL: redis.url };
    const auth = track(await startAuthMember(env));
    const authz = track(await startAuthzMember(env));
    const warmup = await login(auth, 'warmup');
    await logoutOk(auth, warmup);
    await waitFor(async () => (await blacklistStats(authz)).version === 1, 'replica at version 1', 5000);
    const applied = (await blacklistStats(authz)).events_applied;
    // Unsigned events are accepted (the seed's publishers sign nothing): the forger takes version 2.
    const forged = {
      type: 'blacklist_added',
      jti: 'forged',
      expire_at: Math.floor(Date.now() / 1000) + 600,
      version: 2,
    };
    await run('/usr/bin/python3', [
      'test/interop/kombu_publish.py',
      RABBITMQ_URL,
      BLACKLIST_TOPIC,
      JSON.stringify(forged),
    ]);
    // Applied (a counter: the replica may already have found it out by the next heartbeat).
    await waitFor(
      async () => (await blacklistStats(authz)).events_applied > applied,
      'the forged version applied',
      5000,
    );

    const token = await login(auth, 'real');
    const monitor = new BoundMonitor([authz]).start();
    await logoutOk(auth, token); // Redis gives it version 2: a duplicate, if the forgery still stands
    monitor.add(token);
    // Found either way: a heartbeat of version 1 read after the forged 2 applied (ahead), or the
    // source's digest at version 2 (diverged).
    await waitFor(async () => (await blacklistStats(authz)).resyncs >= 2, 'the forgery repaired', 5000);
    await new Promise((r) => setTimeout(r, BOUND_MS + 200));
    await monitor.stop();
    assert.deepEqual(monitor.violations, []);
    assert.equal((await check(authz, token)).status, 401);
    // Ready again (see above: a starved event loop may first say degraded, the safe answer).
    await waitFor(async () => (await blacklistStats(authz)).state === 'ready', 'ready again', 5000);
    const state = await blacklistSource(redis.client).state(0);
    const stats = await blacklistStats(authz);
    assert.equal(stats.version, state.version);
    assert.ok(
      ['ahead', 'diverged'].includes(stats.last_resync_reason ?? ''),
      String(stats.last_resync_reason),
    );
  });

  it("auth's broker link cut, then logouts: every ext-authz refuses each within the bound, from Redis's change log", async () => {
    const redis = await ownRedis();
    const proxy = await rabbitProxy();
    running.push(proxy);
    const auth = track(await startAuthMember({ REDIS_URL: redis.url, RABBITMQ_URL: urlThrough(proxy) }));
    await logoutOk(auth, await login(auth, 'first')); // the source's epoch is born with its first write
    const authzs = [
      track(await startAuthzMember({ REDIS_URL: redis.url })),
      track(await startAuthzMember({ REDIS_URL: redis.url })),
    ];
    const monitor = new BoundMonitor(authzs).start();
    proxy.cut();
    const tokens: string[] = [];
    for (let i = 0; i < 4; i++) {
      const token = await login(auth, `cut-${i}`);
      assert.equal(await logout(auth, token), 204, 'Redis committed it: the logout succeeds');
      monitor.add(token);
      tokens.push(token);
      await new Promise((r) => setTimeout(r, 600));
    }
    await new Promise((r) => setTimeout(r, BOUND_MS + 200));
    await monitor.stop();
    assert.deepEqual(monitor.violations, []);
    for (const authz of authzs) {
      for (const token of tokens) assert.equal((await check(authz, token)).status, 401);
      const stats = await blacklistStats(authz);
      assert.ok(stats.catch_ups >= 1, 'repaired by reading the log');
      assert.equal(stats.resyncs, 1, 'no reload');
      assert.ok(stats.source_checks >= 1);
    }
    proxy.restore();
  });

  it('Redis down for everyone, bus up: ext-authz still authenticates from a replica that follows the bus, and refuses what it knows', async () => {
    const redis = await ownRedis();
    const env = { REDIS_URL: redis.url };
    const auth = track(await startAuthMember(env));
    const authz = track(await startAuthzMember(env));
    const revoked = await login(auth, 'revoked');
    await logoutOk(auth, revoked);
    await waitFor(async () => (await check(authz, revoked)).status === 401, 'refused', 5000);
    const token = await login(auth, 'still-fine');
    await killRedisServer(servers.pop()!);
    // No heartbeat can read Redis, no check either: the replica cannot prove it is current.
    await waitFor(async () => (await blacklistStats(authz)).state === 'degraded', 'degraded', 5000);
    assert.equal((await check(authz, token)).status, 200, 'a Redis outage does not fail authentication');
    assert.equal((await check(authz, revoked)).error, 'token_revoked');
    const decisions = await adminJson<{ counts: Record<string, number> }>(authz, '/decisions');
    assert.ok(decisions.counts.allow_unproven! >= 1);
    assert.equal(await logout(auth, token), 503, 'and no logout can commit meanwhile');
    servers.push(await startRedisServer(redis.port));
  });
});
