import type { Bus } from '../../src/bus/bus.ts';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import { busConformance } from './bus.conformance.ts';

const broker = new MemoryBroker();
const buses: MemoryBus[] = [];

busConformance('memory', {
  create: () => {
    const bus = new MemoryBus(broker, { publishTimeoutMs: 1500 });
    buses.push(bus);
    return Promise.resolve(bus);
  },
  disconnect: (bus: Bus) => {
    broker.disconnect(bus as MemoryBus);
    return Promise.resolve();
  },
  reconnect: (bus: Bus) => {
    broker.reconnect(bus as MemoryBus);
    return Promise.resolve();
  },
  teardown: async () => {
    await Promise.all(buses.map((b) => b.close()));
  },
});
