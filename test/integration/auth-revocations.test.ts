import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Bus, BusMessage } from '../../src/bus/bus.ts';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import { BLACKLIST_TOPIC } from '../../src/datasets/blacklist.ts';
import { CachecastError } from '../../src/errors.ts';
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
async function fixture(options: { bus?: Bus; holdAfterExpiryS?: number } = {}) {
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
