// Propagation: publish -> applied in every replica, for 2, 8 and 32 replicas,
// each on its own RabbitMQBus (own connection), all in this one process.
//
// Per event the clock runs from just before publish() until every replica
// answers has(jti) (polled every event-loop turn with setImmediate); the next
// event is published only after that and after the publisher's confirm.
//
// Ceiling: the raw RabbitMQ round trip, one plain rabbitmq-client consumer on
// an exclusive queue bound to a fanout exchange, publish with confirm ->
// consumer callback, detected the same way. Also measured: the same raw
// fanout to N plain consumers (own connections), which shows how much of the
// growth with N is RabbitMQ plus one Node process serving N connections,
// rather than the replica; and the same raw fanout over durable queues with
// persistent messages (what RabbitMQBus declares and sends), which separates
// the broker's persistence cost from the client's. The kinds alternate event by event so machine
// noise hits them alike.
import { randomBytes, randomUUID } from 'node:crypto';
import { Connection } from 'rabbitmq-client';
import type { Consumer } from 'rabbitmq-client';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import { RabbitMQBus } from '../src/amqp/rabbitmq-bus.ts';
import { blacklistDataset, toBlacklistValue } from '../src/datasets/blacklist.ts';
import { encodeEvent } from '../src/events/codec.ts';
import type { Dataset } from '../src/replica/dataset.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { MemorySource } from '../src/sources/memory-source.ts';
import type { Row } from './lib.ts';
import {
  fmt,
  nowNs,
  percentile,
  printRows,
  benchRabbitmqUrl,
  REDIS_BENCH_URL,
  row,
  tick,
  writeResult,
} from './lib.ts';
import { crossProcessRounds } from './propagation-rounds.ts';

const RABBITMQ_URL = benchRabbitmqUrl();

const SIZES = (process.env.BENCH_PROPAGATION_SIZES ?? '2,8,32').split(',').filter(Boolean).map(Number);
// 1000 rather than ~300: a run takes seconds, and p99 of 300 samples is just the 3rd-worst one.
const EVENTS = Number(process.env.BENCH_PROPAGATION_EVENTS ?? 1000);
const WARMUP = 15;
const TIMEOUT_MS = 10_000;

async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

/** N plain consumers, each on its own connection, on one fanout exchange; records the last seq each saw. */
class RawFanout {
  readonly seen: number[];
  readonly #connections: Connection[] = [];
  readonly #consumers: Consumer[] = [];
  readonly #queues: Array<[Connection, string]> = [];

  private constructor(n: number) {
    this.seen = new Array<number>(n).fill(-1);
  }

  /**
   * `durable`: durable queues fed persistent messages, as RabbitMQBus uses
   * (diagnostic); otherwise exclusive transient queues (the plain ceiling).
   */
  static async create(exchange: string, n: number, durable = false): Promise<RawFanout> {
    const fanout = new RawFanout(n);
    await Promise.all(
      Array.from({ length: n }, async (_, k) => {
        const connection = new Connection({ url: RABBITMQ_URL, noDelay: true });
        connection.on('error', () => undefined);
        fanout.#connections.push(connection);
        const queue = `${exchange}.raw.${randomBytes(4).toString('hex')}`;
        const consumer = connection.createConsumer(
          {
            queue,
            queueOptions: durable
              ? { durable: true, arguments: { 'x-expires': 60_000 } }
              : { exclusive: true, autoDelete: true },
            qos: { prefetchCount: 256 },
            exchanges: [{ exchange, type: 'fanout', durable: true }],
            queueBindings: [{ exchange, queue, routingKey: '' }],
          },
          (msg) => {
            const body = Buffer.isBuffer(msg.body) ? msg.body.toString('utf8') : JSON.stringify(msg.body);
            fanout.seen[k] = (JSON.parse(body) as { seq: number }).seq;
          },
        );
        fanout.#consumers.push(consumer);
        fanout.#queues.push([connection, queue]);
        await new Promise<void>((resolve, reject) => {
          consumer.once('ready', () => resolve());
          consumer.once('error', reject);
        });
      }),
    );
    return fanout;
  }

  allSaw(seq: number): boolean {
    for (const s of this.seen) if (s !== seq) return false;
    return true;
  }

  async close(): Promise<void> {
    await Promise.all(this.#consumers.map((c) => c.close()));
    await Promise.all(this.#queues.map(([c, queue]) => c.queueDelete({ queue }).catch(() => undefined)));
    await Promise.all(this.#connections.map((c) => c.close()));
  }
}

interface Samples {
  ceiling: number[];
  raw: number[];
  rawDurable: number[];
  replica: number[];
}

async function measureSize(
  n: number,
  dataset: Dataset<number>,
  source: MemorySource<number>,
  rawExchanges: { single: string; fanout: string; durable: string },
): Promise<Samples> {
  const buses = Array.from({ length: n }, () => new RabbitMQBus({ url: RABBITMQ_URL }));
  const replicas = buses.map(
    (bus) => new ReplicatedCache<number>({ dataset, bus, source, versionCheckIntervalMs: 0 }),
  );
  await Promise.all(replicas.map((r) => r.start()));
  const publisherBus = new RabbitMQBus({ url: RABBITMQ_URL });
  // Separate exchanges: a raw publish reaches only the consumers it measures.
  const single = await RawFanout.create(rawExchanges.single, 1);
  const rawN = await RawFanout.create(rawExchanges.fanout, n);
  const rawDurableN = await RawFanout.create(rawExchanges.durable, n, true);
  const rawConnection = new Connection({ url: RABBITMQ_URL, noDelay: true });
  rawConnection.on('error', () => undefined);
  const rawPublisher = rawConnection.createPublisher({ confirm: true, maxAttempts: 1 });
  let seq = 0;
  const expireAt = Math.floor(Date.now() / 1000) + 3600;

  const replicaEvent = async (): Promise<number> => {
    const jti = randomUUID();
    const version = source.set(jti, toBlacklistValue(expireAt));
    const { body, headers } = encodeEvent(
      { type: 'blacklist_added', jti, expire_at: expireAt },
      { version, published_at: Date.now(), origin: publisherBus.instanceId },
    );
    const start = nowNs();
    const published = publisherBus.publish(dataset.topic, body, { headers });
    await until(() => replicas.every((r) => r.has(jti)), `version ${version} in every replica`);
    const ms = Number(nowNs() - start) / 1e6;
    await published;
    return ms;
  };

  const rawEvent = async (fanout: RawFanout, exchange: string, durable = false): Promise<number> => {
    const s = ++seq;
    const body = Buffer.from(JSON.stringify({ type: 'blacklist_added', jti: randomUUID(), seq: s }));
    const start = nowNs();
    const published = rawPublisher.send({ exchange, routingKey: '', durable }, body);
    await until(() => fanout.allSaw(s), `raw seq ${s}`);
    const ms = Number(nowNs() - start) / 1e6;
    await published;
    return ms;
  };

  const samples: Samples = { ceiling: [], raw: [], rawDurable: [], replica: [] };
  for (let i = 0; i < WARMUP + EVENTS; i++) {
    const ceiling = await rawEvent(single, rawExchanges.single);
    const raw = await rawEvent(rawN, rawExchanges.fanout);
    const rawDurable = await rawEvent(rawDurableN, rawExchanges.durable, true);
    const replica = await replicaEvent();
    if (i < WARMUP) continue;
    samples.ceiling.push(ceiling);
    samples.raw.push(raw);
    samples.rawDurable.push(rawDurable);
    samples.replica.push(replica);
  }
  // Sanity: no replica had to repair itself, so every figure is the live path.
  for (const r of replicas) {
    const stats = r.stats();
    if (stats.gaps !== 0 || stats.resyncs !== 1 || stats.events_rejected !== 0) {
      throw new Error(`replica left the live path: ${JSON.stringify(stats)}`);
    }
  }

  await Promise.all(replicas.map((r) => r.close()));
  await Promise.all(buses.map((b) => b.close()));
  await publisherBus.close();
  await single.close();
  await rawN.close();
  await rawDurableN.close();
  await rawPublisher.close();
  await rawConnection.close();
  return samples;
}

async function main(): Promise<void> {
  const suffix = randomBytes(4).toString('hex');
  const dataset: Dataset<number> = { ...blacklistDataset, topic: `bench.blacklist.${suffix}` };
  const rawExchanges = {
    single: `bench.raw1.${suffix}`,
    fanout: `bench.rawn.${suffix}`,
    durable: `bench.rawd.${suffix}`,
  };
  const source = new MemorySource<number>();
  // The replica code is warmed on an in-memory bus first, so N=2 does not pay the JIT.
  {
    const warm = new ReplicatedCache<number>({ dataset, bus: new MemoryBus(new MemoryBroker()), source });
    await warm.start();
    await warm.close();
  }

  const rows: Row[] = [];
  try {
    for (const n of SIZES) {
      const t = Date.now();
      const s = await measureSize(n, dataset, source, rawExchanges);
      console.log(`N=${n}: ${4 * (EVENTS + WARMUP)} events in ${fmt((Date.now() - t) / 1000)} s`);
      for (const p of [50, 99]) {
        const replica = percentile(s.replica, p);
        const raw = percentile(s.raw, p);
        const rawDurable = percentile(s.rawDurable, p);
        rows.push(
          row(`propagation p${p}, ${n} replicas`, replica, 'ms', {
            ceiling: { label: `raw 1-consumer round trip p${p}`, value: percentile(s.ceiling, p) },
            // The summary's ceiling: the same fanout to n raw consumers, with the
            // durable queues and persistent messages RabbitMQBus uses.
            ...(p === 50
              ? {
                  headline: {
                    title: `publish -> applied in all ${n} replicas, p50`,
                    ceiling: {
                      label: `raw fanout to ${n} consumers, durable queues + persistent messages p${p}`,
                      value: rawDurable,
                    },
                  },
                }
              : {}),
            note:
              `raw fanout to ${n} plain consumers: ${fmt(raw)} ms (replica x${fmt(replica / raw)}); ` +
              `same with durable queues + persistent messages: ${fmt(rawDurable)} ms (replica x${fmt(replica / rawDurable)})`,
          }),
        );
      }
    }
  } finally {
    await cleanup(dataset.topic, rawExchanges);
  }
  printRows(`propagation publish -> applied in every replica, ${EVENTS} events per size`, rows);
  const procs = await crossProcessRounds(RABBITMQ_URL, REDIS_BENCH_URL, suffix);
  printRows('propagation across processes', procs.rows);
  writeResult(
    'propagation',
    [...rows, ...procs.rows],
    [
      `${EVENTS} sequential blacklist_added events per size (after ${WARMUP} warm-up), one event in flight; all replicas, consumers and the publisher share one Node process on this machine.`,
      'Detection polls has(jti) every event-loop turn (setImmediate) for replicas and raw consumers alike.',
      'The ceiling (1 plain consumer on an exclusive queue) and the raw N-consumer fanouts (exclusive transient queues; durable queues with persistent messages as RabbitMQBus uses) were measured interleaved, event by event, with the replica runs.',
      ...procs.notes,
    ],
  );
}

async function cleanup(topic: string, rawExchanges: Record<string, string>): Promise<void> {
  {
    const admin = new Connection(RABBITMQ_URL);
    admin.on('error', () => undefined);
    for (const exchange of [topic, ...Object.values(rawExchanges)]) {
      await admin.exchangeDelete({ exchange }).catch(() => undefined);
    }
    await admin.close();
  }
}

await main();
