import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { afterEach, describe, it } from 'node:test';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  adminJson,
  check,
  login,
  logout,
  replicaState,
  startAuthMember,
  startAuthzMember,
  waitRefused,
} from '../support/authz-fleet.ts';
import { REDIS_URL } from '../support/env.ts';
import { rabbitProxy, urlThrough } from '../support/rabbit.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { waitFor } from '../support/wait.ts';

const running: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.close()));
});

function track(member: FleetMember): FleetMember {
  running.push(member.service);
  return member;
}

async function redisProxy(): Promise<TcpProxy> {
  const proxy = await TcpProxy.to(REDIS_URL, 6379).start();
  running.push(proxy);
  return proxy;
}

function rabbitmqctl(...args: string[]): void {
  execFileSync('rabbitmqctl', args, { stdio: 'ignore', timeout: 120_000 });
}

async function decisions(member: FleetMember): Promise<Record<string, number>> {
  return (await adminJson<{ counts: Record<string, number> }>(member, '/decisions')).counts;
}

describe('ext-authz under faults', () => {
  it('with the broker stopped: logout works, both instances refuse at once from Redis, report degraded, and recover', async () => {
    const auth = track(await startAuthMember());
    const a = track(await startAuthzMember());
    const b = track(await startAuthzMember());
    const before = await login(auth, 'outage-user');
    rabbitmqctl('stop_app');
    try {
      await waitFor(
        async () => (await replicaState(a)) === 'degraded' && (await replicaState(b)) === 'degraded',
        'both degraded',
        20_000,
      );
      assert.equal(await logout(auth, before), 204, 'logout succeeds whenever Redis does');
      for (const member of [a, b]) {
        const result = await check(member, before);
        assert.deepEqual(
          [result.status, result.error],
          [401, 'token_revoked'],
          'refused at once, from Redis',
        );
      }
      const fresh = await login(auth, 'outage-user');
      assert.equal((await check(a, fresh)).status, 200, 'valid tokens still pass while degraded');
    } finally {
      rabbitmqctl('start_app');
    }
    for (const member of [a, b])
      await waitFor(async () => (await replicaState(member)) === 'ready', 'ready again', 60_000);
    // The revocation made during the outage is now held locally, and later logouts propagate.
    const after = await login(auth, 'after-outage');
    assert.equal(await logout(auth, after), 204);
    await Promise.all([waitRefused(a, after, 5000), waitRefused(b, after, 5000)]);
    for (const member of [a, b]) assert.equal((await check(member, before)).error, 'token_revoked');
    const pending = await adminJson<{ pending: number }>(auth, '/revocations');
    await waitFor(
      async () => (await adminJson<{ pending: number }>(auth, '/revocations')).pending === 0,
      `the outage's event drained (pending ${pending.pending})`,
      15_000,
    );
  });

  it('with Redis unreachable and the bus up, revoked tokens stay refused and new logouts still propagate', async () => {
    const auth = track(await startAuthMember());
    const proxy = await redisProxy();
    const a = track(await startAuthzMember({ REDIS_URL: proxy.urlThrough(REDIS_URL) }));
    const early = await login(auth, 'early');
    assert.equal(await logout(auth, early), 204);
    await waitRefused(a, early);
    proxy.cut();
    const late = await login(auth, 'late');
    assert.equal((await check(a, late)).status, 200);
    assert.equal(await logout(auth, late), 204, 'auth has its own path to Redis');
    await waitRefused(a, late, 2000);
    assert.equal((await check(a, early)).error, 'token_revoked');
    assert.equal(await replicaState(a), 'ready', 'the replica needs Redis only to load');
    proxy.restore();
  });

  it('with both the bus and Redis unreachable, the policy decides, and the decision is counted', async () => {
    const auth = track(await startAuthMember());
    const redis = await redisProxy();
    const rabbit = await rabbitProxy();
    running.push(rabbit);
    const env = { REDIS_URL: redis.urlThrough(REDIS_URL), RABBITMQ_URL: urlThrough(rabbit) };
    const refusing = track(await startAuthzMember(env));
    const allowing = track(await startAuthzMember({ ...env, AUTHZ_UNKNOWN_REVOCATION: 'allow' }));
    const revoked = await login(auth, 'gone');
    await logout(auth, revoked);
    await Promise.all([waitRefused(refusing, revoked), waitRefused(allowing, revoked)]);
    const token = await login(auth, 'unknown');
    // Stalled, not cut: the Redis client still looks connected, so only the lookup's
    // own deadline (AUTHZ_REDIS_TIMEOUT_MS) keeps the check from hanging.
    redis.stall();
    rabbit.cut();
    await waitFor(async () => (await replicaState(refusing)) === 'degraded', 'degraded', 20_000);
    await waitFor(async () => (await replicaState(allowing)) === 'degraded', 'degraded', 20_000);

    const refused = await check(refusing, token);
    assert.deepEqual([refused.status, refused.error], [401, 'revocation_unavailable']);
    assert.equal((await decisions(refusing)).revocation_unavailable, 1);
    const allowed = await check(allowing, token);
    assert.equal(allowed.status, 200);
    assert.equal((await decisions(allowing)).allow_unverified, 1);
    for (const member of [refusing, allowing]) {
      assert.equal((await check(member, revoked)).error, 'token_revoked', 'known revocations hold');
    }
    redis.restore();
    rabbit.restore();
    await waitFor(async () => (await replicaState(refusing)) === 'ready', 'ready again', 30_000);
    assert.equal((await check(refusing, token)).status, 200);
  });

  it('a revocation committed by an auth instance that died before publishing is published by the next one', async () => {
    const a = track(await startAuthzMember());
    const rabbit = await rabbitProxy();
    running.push(rabbit);
    const doomed = await startAuthMember({ RABBITMQ_URL: urlThrough(rabbit) });
    const token = await login(doomed, 'orphan');
    rabbit.cut();
    assert.equal(await logout(doomed, token), 204);
    await doomed.service.close(); // gone with its event unpublished
    assert.equal(await replicaState(a), 'ready');
    track(await startAuthMember());
    const ms = await waitRefused(a, token, 10_000);
    assert.ok(ms < 10_000);
    assert.equal((await check(a, token)).error, 'token_revoked');
  });
});
