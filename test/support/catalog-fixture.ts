import { after, before } from 'node:test';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { OutboxRelay } from '../../src/outbox/relay.ts';
import type { RabbitMQBusOptions } from '../../src/amqp/rabbitmq-bus.ts';
import type { TestDatabase } from './env.ts';
import { testDatabase, uniqueName } from './env.ts';
import { deleteExchanges, testBus } from './rabbit.ts';
import type { TcpProxy } from './tcp-proxy.ts';

/**
 * What the catalog integration and fault tests share: a migrated schema of
 * their own, a catalog topic of their own, cleanup in reverse order, and relays
 * that a test can stop so that it runs only the relays it starts.
 */
export function catalogFixture(prefix: string) {
  const topic = uniqueName(prefix);
  let db: TestDatabase | undefined;
  let setup: Promise<TestDatabase> | undefined;
  const closers: Array<() => Promise<void>> = [];
  const relayClosers: Array<() => Promise<void>> = [];

  const fixture = {
    topic,
    dataset: { ...catalogDataset, topic },
    /** Sets up the schema once; a test file's own before() hooks await this first. */
    ready(): Promise<TestDatabase> {
      setup ??= testDatabase().then((created) => (db = created));
      return setup;
    },
    get db(): TestDatabase {
      if (!db) throw new Error('catalogFixture: the database is set up in before()');
      return db;
    },
    /** Runs at the end of the file, last registered first. */
    defer(close: () => Promise<void>): void {
      closers.push(close);
    },
    async startRelay(
      options: { proxy?: TcpProxy; bus?: Partial<RabbitMQBusOptions>; pollIntervalMs?: number } = {},
    ): Promise<OutboxRelay> {
      await fixture.ready();
      const bus = await testBus(options.proxy, options.bus);
      const pool = fixture.db.makePool({ max: 2 });
      const relay = new OutboxRelay({
        pool,
        bus,
        listenConfig: fixture.db.config,
        pollIntervalMs: options.pollIntervalMs ?? 100,
        retryBaseMs: 50,
      });
      relayClosers.push(async () => {
        await relay.close();
        await bus.close();
        await pool.end();
      });
      await relay.start();
      return relay;
    },
    async stopRelays(): Promise<void> {
      for (const close of relayClosers.splice(0)) await close();
    },
  };

  before(async () => {
    await fixture.ready();
  });
  after(async () => {
    await fixture.stopRelays();
    for (const close of closers.splice(0).reverse()) await close();
    await db?.drop();
    await deleteExchanges(topic);
  });
  return fixture;
}
