import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Bus, BusMessage } from '../../src/bus/bus.ts';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import { BLACKLIST_TOPIC } from '../../src/datasets/blacklist.ts';
import { CachecastError, isCachecastError } from '../../src/errors.ts';
import { ReplicaAcks } from '../../src/redis/replica-acks.ts';
import { Revocations } from '../../src/services/auth/revocation-writer.ts';
import type { RedisClient } from '../../src/redis/client.ts';
import { redisClient, uniqueName } from '../support/env.ts';
import { waitFor } from '../support/wait.ts';
import { blacklistKeys } from '../../src/datasets/blacklist.ts';

let redis: RedisClient;
before(async () => {
  redis = await redisClient();
});
after(async () => {
  await redis.close();
});

/** Revocations on private keys, with a listener on the blacklist topic. */
async function fixture(
  options: {
    bus?: Bus;
    holdAfterExpiryS?: number;
    minReplicasAck?: number;
    replicasAckTimeoutMs?: number;
  } = {},
) {
  const name = uniqueName('rev');
  const broker = new MemoryBroker();
  const bus = options.bus ?? new MemoryBus(broker);
  const listener = new MemoryBus(broker);
  const received: Array<Record<string, unknown>> = [];
  await listener.subscribe(BLACKLIST_TOPIC, (m: BusMessage) => {
    received.push({ ...(JSON.parse(m.body.toString()) as object), headers: m.headers });
  });
  const keys = blacklistKeys(name);
  const revocations = new Revocations({
    redis,
    bus,
    keys,
    holdAfterExpiryS: options.holdAfterExpiryS ?? 31,
    minReplicasAck: options.minReplicasAck,
    replicasAckTimeoutMs: options.replicasAckTimeoutMs,
  });
  return { broker, bus, listener, received, keys, revocations };
}

const nowS = () => Math.floor(Date.now() / 1000);

describe('Revocations (logout writes)', () => {
  it('commits key, version and event together, and clears the pending event after the publish', async () => {
    const { revocations, received, keys } = await fixture();
    const exp = nowS() + 600;
    const result = await revocations.revoke('jti-1', exp);
    assert.deepEqual(result, { added: true, version: 1, published: true });
    const ttl = await redis.ttl(`${keys.prefix}jti-1`);
    assert.ok(ttl > 600 + 25 && ttl <= 600 + 31, `outlives exp by the verifiers' skew (ttl ${ttl})`);
    assert.equal(await redis.get(keys.versionKey), '1');
    assert.equal(await revocations.pendingCount(), 0);
    await waitFor(() => received.length === 1, 'event received');
    assert.equal(received[0]!.jti, 'jti-1');
    assert.equal(received[0]!.expire_at, exp + 31);
    await revocations.close();
  });

  it('with REDIS_MIN_REPLICAS_ACK above the replicas Redis has, a logout fails (503) though the master committed it; a retry fails the same way', async () => {
    // The machine's Redis has no replica: WAIT 1 answers 0.
    const { keys, revocations, received } = await fixture({ minReplicasAck: 1, replicasAckTimeoutMs: 50 });
    const exp = Math.floor(Date.now() / 1000) + 600;
    await assert.rejects(revocations.revoke('jti-unreplicated', exp), (err: unknown) =>
      isCachecastError(err, 'REVOCATION_NOT_REPLICATED'),
    );
    assert.equal(await redis.exists(keys.prefix + 'jti-unreplicated'), 1, 'the master has it');
    // The repeated logout (the client's retry) must not answer 204 on the strength of SET NX failing.
    await assert.rejects(revocations.revoke('jti-unreplicated', exp), (err: unknown) =>
      isCachecastError(err, 'REVOCATION_NOT_REPLICATED'),
    );
    // Its event still goes out (the master has it): the drainer publishes it.
    revocations.start();
    await waitFor(() => received.length === 1, 'the event of the committed revocation');
    await revocations.close();
  });

  it('shares WAITs: callers answered while one is on the wire join the next, so two WAITs serve any number', async () => {
    const sent: Array<(n: number) => void> = [];
    const fake = { wait: () => new Promise<number>((resolve) => sent.push(resolve)) };
    const acks = new ReplicaAcks(fake as unknown as RedisClient, 1, 1000);
    const first = acks.acked();
    await new Promise((r) => setImmediate(r));
    assert.equal(sent.length, 1);
    const later = [acks.acked(), acks.acked(), acks.acked()];
    await new Promise((r) => setImmediate(r));
    assert.equal(sent.length, 1, 'the later callers wait for the WAIT on the wire to end first');
    sent[0]!(1);
    assert.equal(await first, 1);
    await new Promise((r) => setImmediate(r));
    assert.equal(sent.length, 2, 'one more WAIT for all of them');
    sent[1]!(0);
    assert.deepEqual(await Promise.all(later), [0, 0, 0]);
  });

  it('a repeated logout changes nothing and publishes nothing', async () => {
    const { revocations, received, keys } = await fixture();
    await revocations.revoke('again', nowS() + 600);
    assert.deepEqual(await revocations.revoke('again', nowS() + 600), {
      added: false,
      version: undefined,
      published: false,
    });
    assert.equal(await redis.get(keys.versionKey), '1');
    await waitFor(() => received.length >= 1, 'first event');
    assert.equal(received.length, 1);
    await revocations.close();
  });

  it('takes fractional and just-expired exp values (a verifier still accepts them within its skew)', async () => {
    const { revocations, keys } = await fixture();
    const fractional = await revocations.revoke('frac', nowS() + 100.25);
    assert.equal(fractional.added, true);
    const justExpired = await revocations.revoke('late', nowS() - 20);
    assert.equal(justExpired.added, true);
    const ttl = await redis.ttl(`${keys.prefix}late`);
    assert.ok(ttl >= 9, `still revoked for the rest of the skew window (ttl ${ttl})`);
    await revocations.close();
  });

  it('with the bus down, logout still commits; the drainer publishes once the bus is back', async () => {
    const { revocations, received, broker, bus } = await fixture();
    revocations.start();
    broker.disconnect(bus as MemoryBus);
    const result = await revocations.revoke('offline', nowS() + 600);
    assert.deepEqual(result, { added: true, version: 1, published: false });
    assert.equal(await revocations.pendingCount(), 1);
    broker.reconnect(bus as MemoryBus);
    await waitFor(() => received.length === 1, 'drained after reconnect', 5000);
    await waitFor(async () => (await revocations.pendingCount()) === 0, 'pending cleared');
    await revocations.close();
  });

  it('backs off while publishes fail, instead of spinning', async () => {
    let attempts = 0;
    const failing: Bus = {
      instanceId: 'failing',
      state: 'up',
      onStateChange: () => () => undefined,
      publish: () => {
        attempts++;
        return Promise.reject(new CachecastError('BUS_PUBLISH_FAILED', 'nacked'));
      },
      subscribe: () => Promise.reject(new Error('unused')),
      close: () => Promise.resolve(),
    };
    const { revocations } = await fixture({ bus: failing });
    await revocations.revoke('stuck', nowS() + 600);
    revocations.start();
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(attempts >= 2 && attempts < 12, `${attempts} publish attempts in 1 s`);
    assert.equal(await revocations.pendingCount(), 1, 'kept until published');
    const closing = revocations.close();
    await closing;
    assert.equal(revocations.close(), revocations.close(), 'close() is idempotent');
  });
});
