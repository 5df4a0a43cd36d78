import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Bus, BusMessage } from '../../src/bus/bus.ts';
import { isCachecastError } from '../../src/errors.ts';
import { uniqueName } from '../support/env.ts';
import { delay, waitFor } from '../support/wait.ts';

export interface BusHarness {
  /** A new bus instance (its own connection), with a publish timeout of about 1.5 s. */
  create(): Promise<Bus>;
  /** Cuts this instance off the broker; resolves once its state is 'down'. */
  disconnect(bus: Bus): Promise<void>;
  reconnect(bus: Bus): Promise<void>;
  /** Topics to clean up afterwards. */
  track?(topic: string): void;
  teardown(): Promise<void>;
}

/**
 * The contract every Bus adapter must honour. Run against the in-memory bus
 * and the RabbitMQ bus; a replica relies on exactly these behaviours.
 */
export function busConformance(name: string, harness: BusHarness): void {
  describe(`Bus conformance: ${name}`, () => {
    after(() => harness.teardown());

    const topic = (): string => {
      const t = uniqueName('conf.topic');
      harness.track?.(t);
      return t;
    };

    const collect = async (bus: Bus, t: string, out: BusMessage[], onReady?: () => void) =>
      bus.subscribe(t, (m) => void out.push(m), onReady ? { onReady } : {});

    it('delivers every message to every subscribed instance, once, intact', async () => {
      const [pub, a, b] = await Promise.all([harness.create(), harness.create(), harness.create()]);
      const t = topic();
      const gotA: BusMessage[] = [];
      const gotB: BusMessage[] = [];
      await collect(a, t, gotA);
      await collect(b, t, gotB);
      await pub.publish(t, Buffer.from('{"type":"x","n":1}'), { headers: { 'x-test': 'yes' } });
      await waitFor(() => gotA.length === 1 && gotB.length === 1, 'delivery to both');
      await delay(100);
      assert.equal(gotA.length, 1);
      assert.equal(gotB.length, 1);
      for (const m of [gotA[0]!, gotB[0]!]) {
        assert.equal(m.body.toString(), '{"type":"x","n":1}');
        assert.equal(m.headers['x-test'], 'yes');
        assert.equal(m.contentType, 'application/json');
        assert.equal(m.topic, t);
      }
    });

    it("keeps one publisher's order", async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const t = topic();
      const got: BusMessage[] = [];
      await collect(sub, t, got);
      const n = 200;
      await Promise.all(Array.from({ length: n }, (_, i) => pub.publish(t, JSON.stringify({ i }))));
      await waitFor(() => got.length === n, `${n} messages`);
      assert.deepEqual(
        got.map((m) => (JSON.parse(m.body.toString()) as { i: number }).i),
        Array.from({ length: n }, (_, i) => i),
      );
    });

    it('keeps topics apart', async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const [t1, t2] = [topic(), topic()];
      const got1: BusMessage[] = [];
      const got2: BusMessage[] = [];
      await collect(sub, t1, got1);
      await collect(sub, t2, got2);
      await pub.publish(t1, '"one"');
      await waitFor(() => got1.length === 1, 'delivery on t1');
      await delay(100);
      assert.equal(got2.length, 0);
    });

    it('calls onReady before subscribe() resolves, and delivers what is published right after', async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const t = topic();
      let ready = 0;
      const got: BusMessage[] = [];
      await collect(sub, t, got, () => ready++);
      assert.equal(ready, 1);
      assert.equal(sub.state, 'up');
      await pub.publish(t, '"first"');
      await waitFor(() => got.length === 1, 'the first message');
    });

    it('reports down and up, re-establishes subscriptions (onReady again) and keeps what was published meanwhile', async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const t = topic();
      const states: string[] = [];
      sub.onStateChange((s) => states.push(s));
      let ready = 0;
      const got: BusMessage[] = [];
      await collect(sub, t, got, () => ready++);
      await pub.publish(t, '"before"');
      await waitFor(() => got.length === 1, 'message before the cut');
      await harness.disconnect(sub);
      assert.equal(sub.state, 'down');
      await pub.publish(t, '"during-1"');
      await pub.publish(t, '"during-2"');
      await harness.reconnect(sub);
      await waitFor(() => ready === 2, 'onReady after reconnect');
      assert.equal(sub.state, 'up');
      await pub.publish(t, '"after"');
      const bodies = (): string[] => got.map((m) => m.body.toString());
      await waitFor(() => bodies().includes('"after"'), 'every message');
      // At least once: a message whose ack the cut swallowed is delivered again.
      assert.deepEqual([...new Set(bodies())], ['"before"', '"during-1"', '"during-2"', '"after"']);
      assert.deepEqual(
        bodies().filter((b) => b !== '"before"'),
        ['"during-1"', '"during-2"', '"after"'],
      );
      assert.deepEqual(states.slice(0, 2), ['down', 'up']);
    });

    it('publish() waits for a reconnect within its timeout', async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const t = topic();
      const got: BusMessage[] = [];
      await collect(sub, t, got);
      await harness.disconnect(pub);
      const published = pub.publish(t, '"late"');
      await delay(200);
      await harness.reconnect(pub);
      await published;
      await waitFor(() => got.length === 1, 'the delayed message');
    });

    it('publish() rejects with BUS_PUBLISH_TIMEOUT while the broker stays away', async () => {
      const pub = await harness.create();
      const t = topic();
      await harness.disconnect(pub);
      await assert.rejects(pub.publish(t, '"lost?"'), (err) => isCachecastError(err, 'BUS_PUBLISH_TIMEOUT'));
      await harness.reconnect(pub);
    });

    it('survives a throwing handler: reports it and delivers the next message', async () => {
      const [pub, sub] = await Promise.all([harness.create(), harness.create()]);
      const t = topic();
      const errors: unknown[] = [];
      const got: string[] = [];
      await sub.subscribe(
        t,
        (m) => {
          const text = m.body.toString();
          if (text === '"boom"') throw new Error('handler failed');
          got.push(text);
        },
        { onError: (e) => errors.push(e) },
      );
      await pub.publish(t, '"boom"');
      await pub.publish(t, '"fine"');
      await waitFor(() => got.length === 1, 'the message after the failure');
      assert.equal(errors.length, 1);
      await delay(100);
      assert.deepEqual(got, ['"fine"'], 'the failed message is not redelivered');
    });

    it('stops delivering to a closed subscription only', async () => {
      const [pub, a, b] = await Promise.all([harness.create(), harness.create(), harness.create()]);
      const t = topic();
      const gotA: BusMessage[] = [];
      const gotB: BusMessage[] = [];
      const subA = await collect(a, t, gotA);
      await collect(b, t, gotB);
      await subA.close();
      await subA.close();
      await pub.publish(t, '"x"');
      await waitFor(() => gotB.length === 1, 'delivery to the open subscription');
      await delay(100);
      assert.equal(gotA.length, 0);
    });

    it('close() is idempotent; publish and subscribe afterwards reject with BUS_CLOSED', async () => {
      const bus = await harness.create();
      await Promise.all([bus.close(), bus.close()]);
      assert.equal(bus.state, 'closed');
      await assert.rejects(bus.publish(topic(), '"x"'), (err) => isCachecastError(err, 'BUS_CLOSED'));
      await assert.rejects(
        bus.subscribe(topic(), () => undefined),
        (err) => isCachecastError(err, 'BUS_CLOSED'),
      );
    });
  });
}
