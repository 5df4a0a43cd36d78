// One reader process of the cross-process propagation rounds (started by
// bench/propagation.bench.ts with fork()). On the coordinator's word it opens
// readers of one system in this process, and reports over the IPC channel the
// moment each of them can read a change:
//
// - 'cc'      ReplicatedCache over RabbitMQBus (durable per-instance queue);
// - 'stream'  ReplicatedCache over a RabbitMQ stream (bench/stream-bus.ts);
// - 'bento'   BentoCache: memory L1, Redis L2, Redis bus (L1 invalidation).
//
// The hooks are symmetric: each library says "a change arrived" (cachecast's
// onApplied, BentoCache's bus:message:received) and the reader then does the
// read an application would do and reports only once that read returns the
// new value (has(jti) for cachecast; get() for BentoCache, which refetches
// from L2 because its L1 entry was just invalidated).
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisBusDriver, redisDriver } from 'bentocache/drivers/redis';
import { RabbitMQBus } from '../src/amqp/rabbitmq-bus.ts';
import type { Bus } from '../src/bus/bus.ts';
import { blacklistDataset, blacklistKeys } from '../src/datasets/blacklist.ts';
import { connectRedis } from '../src/redis/client.ts';
import type { ManagedRedis } from '../src/redis/client.ts';
import { silentLogger } from '../src/logger.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { blacklistSource } from '../src/sources/blacklist-source.ts';
import { StreamBus } from './stream-bus.ts';

export type ReaderSystem = 'cc' | 'stream' | 'bento';

export type ToReader =
  | {
      op: 'open';
      sys: ReaderSystem;
      /** Readers of this system in this process. */
      count: number;
      rabbitmqUrl: string;
      redisUrl: string;
      /** cc/stream: the blacklist keys' base; bento: its prefix. */
      base: string;
      /** bento: the key the writer changes. */
      key?: string;
    }
  | { op: 'close'; sys: ReaderSystem }
  | { op: 'exit' };

export type FromReader =
  /** Sent once the process listens: a message sent before that would be lost. */
  | { op: 'hello' }
  | { op: 'opened'; sys: ReaderSystem }
  | { op: 'closed'; sys: ReaderSystem }
  | { op: 'saw'; sys: ReaderSystem; key: string; value?: number }
  | { op: 'failed'; error: string };

interface Opened {
  close(): Promise<void>;
}

const opened = new Map<ReaderSystem, Opened>();

function send(message: FromReader): void {
  // The callback takes a write error (the coordinator gone) instead of an 'error' event.
  if (process.connected) process.send?.(message, undefined, undefined, () => undefined);
}

async function openReplicas(sys: 'cc' | 'stream', m: Extract<ToReader, { op: 'open' }>): Promise<Opened> {
  const redis: ManagedRedis = connectRedis(m.redisUrl, silentLogger, 'bench-reader');
  await redis.connected;
  const keys = blacklistKeys(m.base);
  const buses: Bus[] = [];
  const replicas: Array<ReplicatedCache<number>> = [];
  for (let i = 0; i < m.count; i++) {
    const bus: Bus = sys === 'cc' ? new RabbitMQBus({ url: m.rabbitmqUrl }) : new StreamBus(m.rabbitmqUrl);
    buses.push(bus);
    const replica: ReplicatedCache<number> = new ReplicatedCache<number>({
      dataset: blacklistDataset,
      bus,
      source: blacklistSource(redis.client, { keys }),
      versionCheckIntervalMs: 0,
      onApplied: (event) => {
        const change = event.change;
        if (change.kind !== 'set') return;
        // Told just as the change is applied: report once a read sees it.
        const key = change.key;
        const check = (): void => {
          if (replica.has(key)) send({ op: 'saw', sys, key });
          else setImmediate(check);
        };
        queueMicrotask(check);
      },
    });
    replicas.push(replica);
  }
  await Promise.all(replicas.map((r) => r.start()));
  return {
    async close() {
      for (const r of replicas) {
        const s = r.stats();
        if (s.gaps !== 0 || s.events_rejected !== 0) {
          send({ op: 'failed', error: `${sys} replica left the live path: ${JSON.stringify(s)}` });
        }
      }
      await Promise.all(replicas.map((r) => r.close()));
      await Promise.all(buses.map((b) => b.close()));
      await redis.close();
    },
  };
}

async function openBento(m: Extract<ToReader, { op: 'open' }>): Promise<Opened> {
  const url = new URL(m.redisUrl);
  const connection = {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
  };
  const key = m.key ?? 'k';
  const caches: Array<BentoCache<Record<string, ReturnType<typeof bentostore>>>> = [];
  for (let i = 0; i < m.count; i++) {
    const bento = new BentoCache({
      default: 'multi',
      prefix: m.base,
      stores: {
        multi: bentostore()
          .useL1Layer(memoryDriver({ maxSize: '10mb' }))
          .useL2Layer(redisDriver({ connection }))
          .useBus(redisBusDriver({ connection })),
      },
    });
    let held = (await bento.get<number>({ key })) ?? -1;
    bento.on('bus:message:received', () => {
      // The bus handler invalidates L1 right after this event, synchronously:
      // read from the next microtask on, as an application's next get() would.
      const deadline = Date.now() + 5000;
      const refetch = async (): Promise<void> => {
        const value = (await bento.get<number>({ key })) ?? -1;
        if (value === held) {
          if (Date.now() < deadline) setImmediate(() => void refetch());
          return;
        }
        held = value;
        send({ op: 'saw', sys: 'bento', key, value });
      };
      queueMicrotask(() => void refetch());
    });
    caches.push(bento);
  }
  return {
    async close() {
      await Promise.all(caches.map((c) => c.disconnectAll()));
    },
  };
}

async function handle(m: ToReader): Promise<void> {
  if (m.op === 'exit') {
    await Promise.all([...opened.values()].map((o) => o.close()));
    process.exit(0);
  }
  if (m.op === 'open') {
    const o = m.sys === 'bento' ? await openBento(m) : await openReplicas(m.sys, m);
    opened.set(m.sys, o);
    send({ op: 'opened', sys: m.sys });
    return;
  }
  await opened.get(m.sys)?.close();
  opened.delete(m.sys);
  send({ op: 'closed', sys: m.sys });
}

process.on('message', (m: ToReader) => {
  handle(m).catch((err: unknown) => send({ op: 'failed', error: String(err) }));
});
process.on('disconnect', () => process.exit(0));
send({ op: 'hello' });
