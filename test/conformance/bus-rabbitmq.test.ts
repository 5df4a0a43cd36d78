import { Connection } from 'rabbitmq-client';
import type { Bus } from '../../src/bus/bus.ts';
import { RabbitMQBus } from '../../src/bus/rabbitmq-bus.ts';
import { RABBITMQ_URL } from '../support/env.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { waitFor } from '../support/wait.ts';
import { busConformance } from './bus.conformance.ts';

const target = new URL(RABBITMQ_URL);
const proxies = new Map<Bus, TcpProxy>();
const topics: string[] = [];

/** Each instance reaches RabbitMQ through its own proxy, so it can be cut alone. */
busConformance('rabbitmq', {
  async create() {
    const proxy = await new TcpProxy(target.hostname, Number(target.port || 5672)).start();
    const url = new URL(RABBITMQ_URL);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    const bus = new RabbitMQBus({
      url: url.toString(),
      publishTimeoutMs: 1500,
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
    const admin = new Connection(RABBITMQ_URL);
    for (const exchange of topics) await admin.exchangeDelete({ exchange }).catch(() => undefined);
    await admin.close();
  },
});
