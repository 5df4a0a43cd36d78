import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Bus } from '../../src/bus/bus.ts';
import { RabbitMQBus } from '../../src/amqp/rabbitmq-bus.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import { deleteExchanges, rabbitProxy, urlThrough } from '../support/rabbit.ts';
import { waitFor } from '../support/wait.ts';
import { busConformance } from './bus.conformance.ts';

const proxies = new Map<Bus, TcpProxy>();
const topics: string[] = [];

/** Each instance reaches RabbitMQ through its own proxy, so it can be cut alone. */
busConformance('rabbitmq', {
  async create() {
    const proxy = await rabbitProxy();
    const bus = new RabbitMQBus({
      url: urlThrough(proxy),
      publishTimeoutMs: 3000, // covers a reconnect, its handshake and a persistent confirm on a slow disk
      retryLowMs: 50,
      retryHighMs: 300,
    });
    proxies.set(bus, proxy);
    await waitFor(() => bus.state === 'up', 'bus up');
    return bus;
  },
  async disconnect(bus) {
    proxies.get(bus)!.cut();
    await waitFor(() => bus.state === 'down', 'bus down');
  },
  async reconnect(bus) {
    proxies.get(bus)!.restore();
    await waitFor(() => bus.state === 'up', 'bus up again');
  },
  track: (topic) => void topics.push(topic),
  async teardown() {
    await Promise.all([...proxies.keys()].map((b) => b.close()));
    await Promise.all([...proxies.values()].map((p) => p.close()));
    await deleteExchanges(...topics);
  },
});

describe('RabbitMQ bus: several nodes in RABBITMQ_URL', () => {
  it('connects through the first node that answers and fails over when its node goes', async () => {
    const [nodeA, nodeB] = await Promise.all([rabbitProxy(), rabbitProxy()]);
    nodeA.cut(); // node A refuses connections at first
    const bus = new RabbitMQBus({
      url: `${urlThrough(nodeA)},${urlThrough(nodeB)}`,
      retryLowMs: 50,
      retryHighMs: 200,
    });
    const t = `failover.${bus.instanceId}`;
    try {
      await waitFor(() => bus.state === 'up', 'connected through node B');
      assert.equal(nodeB.connections > 0, true);
      nodeA.restore();
      nodeB.cut(); // node B dies: the bus must come back through node A
      await waitFor(() => bus.state === 'down', 'down after losing node B');
      await waitFor(() => bus.state === 'up', 'up again through node A', 10_000);
      assert.equal(nodeA.connections > 0, true);
      const got: string[] = [];
      await bus.subscribe(t, (m) => void got.push(m.body.toString()));
      await bus.publish(t, '"via A"');
      await waitFor(() => got.length === 1, 'a round trip through node A');
    } finally {
      await bus.close();
      await nodeA.close();
      await nodeB.close();
      await deleteExchanges(t);
    }
  });
});
