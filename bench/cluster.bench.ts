// What a cluster costs, measured in one run on this machine (every node on
// the same 2 cores, so a real cluster's network adds to these and its spare
// cores take away):
//
// - propagation: one publish -> delivered to 8 subscribers (RabbitMQBus, a
//   durable per-instance queue each), p50/p99; the machine's single broker
//   node with classic queues (the baseline), against the three-node cluster
//   (scripts/rabbit-cluster.sh) with classic and with quorum queues
//   (EVENT_QUEUE_TYPE). Rounds of the three interleave.
// - Celery: send_task -> the match worker -> result, one at a time (the
//   stack's Celery client and `serve match-worker`, in this process), on the
//   cluster with `character.match` classic (the baseline) and quorum
//   (MATCH_QUEUE_TYPE).
// - logout: Revocations.revoke() through node-redis's Sentinel client
//   (scripts/redis-sentinel.sh: master, replica, three Sentinels) with
//   REDIS_MIN_REPLICAS_ACK 0 (the baseline) and 1 (WAIT for the replica).
//
// Starts the cluster and the Sentinel group fresh and removes them after.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { RabbitMQBus } from '../src/amqp/rabbitmq-bus.ts';
import type { QueueType } from '../src/amqp/queue-type.ts';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import { blacklistKeys } from '../src/datasets/blacklist.ts';
import { silentLogger } from '../src/logger.ts';
import { connectRedis } from '../src/redis/client.ts';
import { parseSentinels } from '../src/redis/target.ts';
import { Revocations } from '../src/services/auth/revocation-writer.ts';
import { startMatchWorkerService } from '../src/services/match-worker/main.ts';
import { CeleryClient } from '../src/stack/celery-client.ts';
import { upsertCharacter } from '../test/support/catalog-writes.ts';
import { testDatabase } from '../test/support/env.ts';
import type { Row } from './lib.ts';
import { benchRabbitmqUrl, nowNs, percentile, printRows, REDIS_BENCH_URL, row, writeResult } from './lib.ts';

const SCRIPTS = join(import.meta.dirname, '..', 'scripts');
const SUBSCRIBERS = 8;
const ROUNDS = Number(process.env.BENCH_CLUSTER_ROUNDS ?? 5);
const EVENTS_PER_ROUND = Number(process.env.BENCH_CLUSTER_EVENTS ?? 200);
const TASKS = Number(process.env.BENCH_CLUSTER_TASKS ?? 300);
const LOGOUTS = Number(process.env.BENCH_CLUSTER_LOGOUTS ?? 1000);

function script(name: string, ...args: string[]): string {
  return execFileSync('bash', [join(SCRIPTS, name), ...args], {
    encoding: 'utf8',
    timeout: 300_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
function envOf(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
}
const ms = (ns: number): number => ns / 1e6;

/** 8 subscribers on one topic; returns a function timing one publish until all 8 have it. */
async function fanout(url: string, type: QueueType, topic: string) {
  const subs: RabbitMQBus[] = [];
  const waiting = new Map<string, { left: number; done: () => void }>();
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const bus = new RabbitMQBus({ url, eventQueueType: type, logger: silentLogger });
    subs.push(bus);
    await bus.subscribe(topic, (m) => {
      const w = waiting.get(JSON.parse(m.body.toString()) as string);
      if (w && --w.left === 0) w.done();
    });
  }
  const pub = new RabbitMQBus({ url, logger: silentLogger });
  return {
    async once(): Promise<number> {
      const id = randomUUID();
      const t = nowNs();
      const all = new Promise<void>((done) => waiting.set(id, { left: SUBSCRIBERS, done }));
      await pub.publish(topic, JSON.stringify(id));
      await all;
      waiting.delete(id);
      return Number(nowNs() - t);
    },
    async close(): Promise<void> {
      await Promise.all([...subs, pub].map((b) => b.close()));
    },
  };
}

async function propagation(clusterUrl: string): Promise<Row[]> {
  const single = benchRabbitmqUrl();
  const variants = [
    { name: 'single node, classic queues', f: await fanout(single, 'classic', 'bench.cluster.single') },
    {
      name: '3-node cluster, classic queues',
      f: await fanout(clusterUrl, 'classic', 'bench.cluster.classic'),
    },
    { name: '3-node cluster, quorum queues', f: await fanout(clusterUrl, 'quorum', 'bench.cluster.quorum') },
  ];
  const samples = variants.map(() => [] as number[]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, v] of variants.entries()) {
      for (let e = 0; e < EVENTS_PER_ROUND; e++) {
        const ns = await v.f.once();
        if (round > 0) samples[i]!.push(ns); // the first round warms up
      }
    }
  }
  await Promise.all(variants.map((v) => v.f.close()));
  const rows: Row[] = [];
  const [base, ...others] = variants.map((v, i) => ({ name: v.name, s: samples[i]! }));
  for (const q of [50, 99]) {
    const baseline = { label: `${base!.name} p${q}`, value: ms(percentile(base!.s, q)) };
    for (const o of others) {
      rows.push(
        row(
          `publish -> delivered to all ${SUBSCRIBERS} subscribers, ${o.name}, p${q}`,
          ms(percentile(o.s, q)),
          'ms',
          {
            baseline,
            ...(q === 99 && o.name.includes('quorum')
              ? { headline: 'events on a 3-node cluster, quorum queues' }
              : {}),
          },
        ),
      );
    }
  }
  return rows;
}

async function celery(clusterUrl: string): Promise<Row[]> {
  const db = await testDatabase();
  await upsertCharacter(
    db.pool,
    {
      id: randomUUID(),
      code: 'pet',
      name: 'Pet',
      match_label: '플라스틱',
      type_label: 'type',
      dialog: 'hello',
      is_default: false,
    },
    'unused.topic',
  );
  const url = new URL(process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres');
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  const results: Record<QueueType, number[]> = { classic: [], quorum: [] };
  try {
    for (const type of ['classic', 'quorum'] as const) {
      const worker = await startMatchWorkerService({
        RABBITMQ_URL: clusterUrl,
        REDIS_URL: REDIS_BENCH_URL,
        DATABASE_URL: url.toString(),
        MATCH_QUEUE_TYPE: type,
        ADMIN_PORT: '0',
        HOST: '127.0.0.1',
        LOG_LEVEL: 'silent',
      });
      await worker.consuming;
      const client = new CeleryClient({
        rabbitmqUrl: clusterUrl,
        redis: REDIS_BENCH_URL,
        queueType: type,
      });
      const classification = { major_category: '재활용', middle_category: '플라스틱', minor_category: 'PET' };
      for (let i = 0; i < TASKS + 30; i++) {
        const r = await client.match(classification);
        if (i >= 30) results[type].push(r.totalMs * 1e6);
      }
      await client.close();
      await worker.close();
      // The next type declares the same names: the old queues go.
      for (const queue of ['character.match', 'character.match.dlq', 'character.grants']) {
        try {
          script('rabbit-cluster.sh', 'ctl', '1', 'delete_queue', queue);
        } catch {
          // Declared only once something was sent to it (the DLQ).
        }
      }
    }
  } finally {
    await db.drop();
  }
  const rows: Row[] = [];
  for (const q of [50, 99]) {
    rows.push(
      row(
        `Celery send_task -> result on the 3-node cluster, quorum character.match, p${q}`,
        ms(percentile(results.quorum, q)),
        'ms',
        {
          baseline: { label: `classic character.match p${q}`, value: ms(percentile(results.classic, q)) },
          ...(q === 50 ? { headline: 'Celery round trip, quorum command queue' } : {}),
        },
      ),
    );
  }
  return rows;
}

async function logouts(sentinels: string): Promise<Row[]> {
  const redis = connectRedis(
    { url: 'redis://127.0.0.1:6379/0', sentinels: parseSentinels(sentinels) },
    silentLogger,
    'bench-logout',
  );
  await redis.connected;
  const bus = new MemoryBus(new MemoryBroker());
  const keys = blacklistKeys(`bench-logout-${Date.now()}`);
  const writers = {
    0: new Revocations({ redis: redis.client, bus, keys, minReplicasAck: 0 }),
    1: new Revocations({ redis: redis.client, bus, keys, minReplicasAck: 1 }),
  };
  const samples: Record<0 | 1, number[]> = { 0: [], 1: [] };
  const exp = Math.floor(Date.now() / 1000) + 600;
  for (let i = 0; i < LOGOUTS + 100; i++) {
    for (const ack of [0, 1] as const) {
      const t = nowNs();
      await writers[ack].revoke(randomUUID(), exp);
      if (i >= 100) samples[ack].push(Number(nowNs() - t));
    }
  }
  await Promise.all([writers[0].close(), writers[1].close(), bus.close()]);
  await redis.close();
  const rows: Row[] = [];
  for (const q of [50, 99]) {
    rows.push(
      row(
        `logout (revoke) with REDIS_MIN_REPLICAS_ACK=1 through Sentinel, p${q}`,
        ms(percentile(samples[1], q)),
        'ms',
        {
          baseline: { label: `REDIS_MIN_REPLICAS_ACK=0 p${q}`, value: ms(percentile(samples[0], q)) },
          ...(q === 50 ? { headline: 'logout waiting for a Redis replica' } : {}),
        },
      ),
    );
  }
  return rows;
}

const rows: Row[] = [];
try {
  script('rabbit-cluster.sh', 'down');
  script('redis-sentinel.sh', 'down');
  const clusterUrl = envOf(script('rabbit-cluster.sh', 'up')).RABBITMQ_URL!;
  const sentinels = envOf(script('redis-sentinel.sh', 'up')).REDIS_SENTINELS!;
  rows.push(...(await propagation(clusterUrl)));
  rows.push(...(await celery(clusterUrl)));
  rows.push(...(await logouts(sentinels)));
} finally {
  script('rabbit-cluster.sh', 'down');
  script('redis-sentinel.sh', 'down');
}
printRows('cluster', rows);
writeResult('cluster', rows, [
  'Every node of the cluster, the Sentinel group and the services run on the same 2 cores: read the ratios, not the absolute times; a real cluster adds network round trips to the replicated writes (quorum queues, WAIT).',
  `propagation: ${ROUNDS - 1} measured rounds x ${EVENTS_PER_ROUND} events per variant, interleaved; Celery: ${TASKS} tasks per queue type, one at a time; logouts: ${LOGOUTS} per setting, interleaved.`,
]);
process.exit(0);
