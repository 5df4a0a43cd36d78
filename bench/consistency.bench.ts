// Consistency under churn and faults: the JWT blacklist as production runs it
// (two auth writers with their revocation script, drainer and heartbeats;
// replicas on their own RabbitMQ connections; Redis of its own), revocations
// at a steady rate, faults injected all along, and reads sampled from every
// replica and compared with the source.
//
// A read of jti k at time T "matches within 1 s" when the source said the
// same thing of k at some moment of [T - 1 s, T]. A replica that is not
// `ready` is read through the source (what ext-authz does), so only ready
// replicas can be stale; the figure counts every read.
//
// Baseline: the seed's consumer (an exclusive auto-delete queue, events
// applied as they come, no versions, no resync), on the same exchange,
// through the same kind of link and faults.
//
// Second figure: what the bound costs the source, in reads per second per
// replica, with the writers' heartbeats and without (each replica then reads
// the source's state itself every staleCheckMs).
import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { Connection } from 'rabbitmq-client';
import type { Consumer } from 'rabbitmq-client';
import { RabbitMQBus } from '../src/amqp/rabbitmq-bus.ts';
import { BLACKLIST_TOPIC, blacklistDataset } from '../src/datasets/blacklist.ts';
import { encodeEvent } from '../src/events/codec.ts';
import { HeartbeatPublisher } from '../src/outbox/heartbeats.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { Revocations } from '../src/services/auth/revocation-writer.ts';
import { blacklistSource } from '../src/sources/blacklist-source.ts';
import { TcpProxy } from '../src/util/tcp-proxy.ts';
import { redisClient } from '../test/support/env.ts';
import { freePort, killRedisServer, startRedisServer } from '../test/support/redis-server.ts';
import type { Row } from './lib.ts';
import { benchRabbitmqUrl, fmt, printRows, row, sleepMs, writeResult } from './lib.ts';

const RABBITMQ_URL = benchRabbitmqUrl();
const DURATION_S = Number(process.env.BENCH_CONSISTENCY_S ?? 60);
const WRITES_PER_S = Number(process.env.BENCH_CONSISTENCY_WRITES ?? 200);
const REPLICAS = 3;
const READS_PER_TICK = 150;
const BOUND_MS = 1000;
const COST_PHASE_S = Number(process.env.BENCH_CONSISTENCY_COST_S ?? 10);

/** What the source knew of a jti: committed between start and end, lost (Redis restart) at lostAt. */
interface Truth {
  start: number;
  end: number;
  lostAt: number;
}

interface Tally {
  reads: number;
  local: number;
  mismatches: number;
  /** Of the mismatches: "revoked" where the source did not hold the revocation (forged, or lost by Redis). */
  falseRevoked: number;
  /** The oldest revocation a ready replica's read missed, in ms past its commit. */
  worstMs: number;
}

function tally(): Tally {
  return { reads: 0, local: 0, mismatches: 0, falseRevoked: 0, worstMs: 0 };
}

/** The seed's consumer: its own exclusive queue, applies whatever comes, never resyncs. */
class SeedConsumer {
  readonly revoked = new Map<string, number>();
  readonly #connection: Connection;
  readonly #consumer: Consumer;

  constructor(url: string, exchange: string) {
    this.#connection = new Connection({ url, retryLow: 50, retryHigh: 500 });
    this.#connection.on('error', () => undefined);
    this.#consumer = this.#connection.createConsumer(
      {
        queue: '',
        queueOptions: { exclusive: true, autoDelete: true },
        exchanges: [{ exchange, type: 'fanout', durable: true }],
        queueBindings: [{ exchange, routingKey: '' }],
      },
      (msg) => {
        const body = Buffer.isBuffer(msg.body) ? msg.body.toString() : JSON.stringify(msg.body);
        const event = JSON.parse(body) as { type?: string; jti?: string; expire_at?: number };
        if (event.type === 'blacklist_added' && event.jti && event.expire_at) {
          this.revoked.set(event.jti, event.expire_at * 1000);
        }
      },
    );
  }

  has(jti: string, now: number): boolean {
    const at = this.revoked.get(jti);
    return at !== undefined && at > now;
  }

  async close(): Promise<void> {
    await this.#consumer.close();
    await this.#connection.close();
  }
}

async function main(): Promise<void> {
  // The real exchange, in the benchmarks' own vhost; Redis of this bench's own.
  const topic = BLACKLIST_TOPIC;
  const dataset = blacklistDataset;
  const redisPort = await freePort();
  let redisServer: ChildProcess = await startRedisServer(redisPort);
  const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  const closers: Array<() => Promise<unknown>> = [];

  // Writers: the auth service's revocation writer and heartbeats, two instances;
  // writer 0 reaches the broker through a proxy that a fault cuts.
  const writerProxy = await TcpProxy.to(RABBITMQ_URL, 5672).start();
  const writers = await Promise.all(
    [writerProxy.urlThrough(RABBITMQ_URL), RABBITMQ_URL].map(async (url) => {
      const redis = await redisClient(redisUrl);
      const bus = new RabbitMQBus({ url, retryLowMs: 50, retryHighMs: 500, heartbeatSec: 2 });
      const revocations = new Revocations({ redis, bus });
      revocations.start();
      const source = blacklistSource(redis);
      const heartbeats = new HeartbeatPublisher({
        bus,
        topic,
        dataset: 'blacklist',
        read: (from) => source.state(from),
        expiring: true,
        onPending: () => revocations.drainSoon(),
      });
      closers.push(
        () => heartbeats.close(),
        () => revocations.close(),
        () => bus.close(),
        () => redis.close(),
      );
      return { redis, bus, revocations, heartbeats };
    }),
  );
  const readerRedis = await redisClient(redisUrl);
  closers.push(() => readerRedis.close());

  // Replicas, each on its own link through its own proxy; the seed's consumer beside them.
  const proxies = await Promise.all(
    Array.from({ length: REPLICAS + 1 }, () => TcpProxy.to(RABBITMQ_URL, 5672).start()),
  );
  const replicaRedis = await redisClient(redisUrl);
  closers.push(() => replicaRedis.close());
  const makeReplica = async (i: number): Promise<ReplicatedCache<number>> => {
    const bus = new RabbitMQBus({
      url: proxies[i]!.urlThrough(RABBITMQ_URL),
      retryLowMs: 50,
      retryHighMs: 500,
      heartbeatSec: 2,
    });
    const replica = new ReplicatedCache<number>({ dataset, bus, source: blacklistSource(replicaRedis) });
    await replica.start();
    closers.push(
      () => replica.close(),
      () => bus.close(),
    );
    return replica;
  };
  const replicas = await Promise.all(Array.from({ length: REPLICAS }, (_, i) => makeReplica(i)));
  const seed = new SeedConsumer(proxies[REPLICAS]!.urlThrough(RABBITMQ_URL), topic);
  closers.push(() => seed.close());
  await sleepMs(500);

  const truth = new Map<string, Truth>();
  /** When Redis was restarted: a revocation whose write spans one may or may not have survived it. */
  const restarts: number[] = [];
  const ambiguous = new Set<string>();
  const jtis: string[] = [];
  const forged: string[] = [];
  const ours = tally();
  const theirs = tally();
  const faults: Record<string, number> = {};
  const note = (kind: string): void => {
    faults[kind] = (faults[kind] ?? 0) + 1;
  };
  let stop = false;

  // Revocations at a steady rate, alternating writers (their events cross on the wire).
  const writing = (async () => {
    let n = 0;
    const started = Date.now();
    while (!stop) {
      const due = started + (n * 1000) / WRITES_PER_S;
      if (due > Date.now()) await sleepMs(due - Date.now());
      const jti = randomUUID();
      const writer = writers[n++ % writers.length]!;
      const start = Date.now();
      void writer.revocations
        .revoke(jti, Math.floor(Date.now() / 1000) + 600)
        .then(() => {
          const end = Date.now();
          if (restarts.some((r) => r > start && r <= end)) ambiguous.add(jti);
          else truth.set(jti, { start, end, lostAt: Infinity });
          jtis.push(jti);
        })
        .catch(() => undefined);
    }
  })();

  // Reads: every 10 ms, from every replica and from the seed's consumer, compared with the truth.
  const judge = (t: Tally, jti: string, answer: boolean, now: number, local: boolean): void => {
    if (ambiguous.has(jti)) return;
    t.reads++;
    if (local) t.local++;
    const k = truth.get(jti);
    const revokedSomewhereInWindow = k !== undefined && k.start <= now && k.lostAt > now - BOUND_MS;
    const notRevokedSomewhereInWindow = k === undefined || now - BOUND_MS < k.end || now >= k.lostAt;
    const ok = answer ? revokedSomewhereInWindow : notRevokedSomewhereInWindow;
    if (ok) return;
    t.mismatches++;
    if (answer) t.falseRevoked++;
    if (!answer && k) t.worstMs = Math.max(t.worstMs, now - k.end);
  };
  const reading = (async () => {
    while (!stop) {
      await sleepMs(10);
      if (jtis.length === 0) continue;
      const now = Date.now();
      for (let i = 0; i < READS_PER_TICK; i++) {
        // Mostly the last two seconds' revocations (the ones in flight), some older, a few forged or never revoked.
        const roll = Math.random();
        const recent = Math.max(0, jtis.length - WRITES_PER_S * 2);
        const jti =
          roll < 0.01
            ? (forged[Math.floor(Math.random() * forged.length)] ?? randomUUID())
            : roll < 0.6
              ? jtis[recent + Math.floor(Math.random() * (jtis.length - recent))]!
              : jtis[Math.floor(Math.random() * jtis.length)]!;
        for (const replica of replicas) {
          // Not ready: ext-authz asks the source, which is right by definition.
          if (replica.state === 'ready') judge(ours, jti, replica.has(jti), now, true);
          else if (!ambiguous.has(jti)) ours.reads++;
        }
        judge(theirs, jti, seed.has(jti, now), now, true);
      }
    }
  })();

  // Faults, one every ~3 s, round robin.
  const kinds = [
    'replica link cut',
    'writer link cut',
    'forged next version',
    'duplicate',
    'replica restart',
    'source restart',
  ];
  const faulting = (async () => {
    for (let i = 0; !stop; i++) {
      await sleepMs(3000);
      if (stop) break;
      const kind = kinds[i % kinds.length]!;
      note(kind);
      switch (kind) {
        case 'replica link cut': {
          const proxy = proxies[i % (REPLICAS + 1)]!;
          proxy.cut();
          await sleepMs(1000 + Math.random() * 2000);
          proxy.restore();
          break;
        }
        case 'writer link cut':
          writerProxy.cut();
          await sleepMs(1000 + Math.random() * 2000);
          writerProxy.restore();
          break;
        case 'forged next version': {
          const state = await blacklistSource(readerRedis).state(0);
          const jti = `forged-${randomUUID()}`;
          forged.push(jti);
          const { body } = encodeEvent(
            { type: 'blacklist_added', jti, expire_at: Math.floor(Date.now() / 1000) + 600 },
            { version: state.version + 1, epoch: state.epoch },
          );
          await writers[1]!.bus.publish(topic, body);
          break;
        }
        case 'duplicate': {
          const jti = jtis[Math.max(0, jtis.length - 50)];
          if (jti) {
            const { body } = encodeEvent(
              { type: 'blacklist_added', jti, expire_at: Math.floor(Date.now() / 1000) + 600 },
              {},
            );
            await writers[1]!.bus.publish(topic, body);
          }
          break;
        }
        case 'replica restart': {
          const r = i % REPLICAS;
          const old = replicas[r]!;
          await old.close();
          replicas[r] = await makeReplica(r);
          break;
        }
        case 'source restart': {
          // Redis without persistence restarted: every revocation so far is gone from the source.
          const lostAt = Date.now();
          restarts.push(lostAt);
          await killRedisServer(redisServer);
          for (const k of truth.values()) if (k.lostAt === Infinity) k.lostAt = lostAt;
          redisServer = await startRedisServer(redisPort);
          break;
        }
      }
    }
  })();

  await sleepMs(DURATION_S * 1000);
  stop = true;
  await Promise.all([writing, reading, faulting]);
  const replicaStats = replicas.map((r) => r.stats());

  // The cost of the bound: source reads per second per replica, with heartbeats and without.
  const cost = async (heartbeats: boolean): Promise<{ perReplica: number; writerReads: number }> => {
    for (const w of writers) {
      if (heartbeats) w.heartbeats.start();
      else await w.heartbeats.close();
    }
    await sleepMs(1000);
    const before = replicas.map((r) => r.stats().source_checks);
    const beats = writers.reduce((n, w) => n + w.heartbeats.stats.published, 0);
    await sleepMs(COST_PHASE_S * 1000);
    const after = replicas.map((r) => r.stats().source_checks);
    const beatsAfter = writers.reduce((n, w) => n + w.heartbeats.stats.published, 0);
    const checks = after.reduce((n, a, i) => n + a - before[i]!, 0) / REPLICAS / COST_PHASE_S;
    const writerReads = (beatsAfter - beats) / COST_PHASE_S;
    return { perReplica: checks + writerReads / REPLICAS, writerReads };
  };
  for (const w of writers) w.heartbeats.start();
  const withBeats = await cost(true);
  const without = await cost(false);

  for (const close of closers.reverse()) await close().catch(() => undefined);
  for (const p of [writerProxy, ...proxies]) await p.close();
  await killRedisServer(redisServer);

  const perMillion = (t: Tally) => (t.mismatches / t.reads) * 1e6;
  const matched = (t: Tally) => `${fmt((1 - t.mismatches / t.reads) * 100)}%`;
  const rows: Row[] = [];
  const faultList = Object.entries(faults)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  rows.push(
    row('reads not matching the source within 1 s, per million', perMillion(ours), 'ppm', {
      ...(ours.mismatches > 0
        ? { baseline: { label: "the seed's consumer", value: perMillion(theirs) } }
        : {}),
      headline: 'consistency under churn and faults: stale reads per million',
      note:
        `${ours.mismatches} of ${ours.reads} reads (${matched(ours)} matched; ${ours.falseRevoked} of the mismatches said "revoked" of a forged jti or one Redis lost, ${ours.mismatches - ours.falseRevoked} missed a revocation; ${fmt((ours.local / ours.reads) * 100)}% answered locally, the rest while degraded through the source); ` +
        `the seed's consumer: ${theirs.mismatches} of ${theirs.reads} (${matched(theirs)}). Faults: ${faultList}`,
    }),
    row('worst staleness of a read from a ready replica', ours.worstMs, 'ms', {
      baseline: { label: "the seed's consumer", value: theirs.worstMs },
      ceiling: { label: 'the bound', value: BOUND_MS },
      note: 'how long after a revocation committed a ready replica still answered "not revoked" (0: never)',
    }),
    row('source reads per second per replica, with heartbeats', withBeats.perReplica, '/s', {
      baseline: {
        label: 'without heartbeats (each replica checks every staleCheckMs)',
        value: without.perReplica,
      },
      headline: 'the staleness bound: source reads per second per replica',
      note: `${REPLICAS} replicas, 2 writers: heartbeats cost the source ${fmt(withBeats.writerReads)} reads/s in all, whatever the number of replicas (so per replica they fall as the fleet grows: ${fmt(withBeats.writerReads / 30)}/s at 30 replicas); without them each replica reads ${fmt(without.perReplica)}/s`,
    }),
  );
  printRows(`consistency: ${DURATION_S} s of ${WRITES_PER_S} revocations/s with faults`, rows);
  console.log(
    'replicas:',
    replicaStats.map((s) => ({
      resyncs: s.resyncs,
      catch_ups: s.catch_ups,
      divergences: s.divergences,
      gaps: s.gaps,
    })),
  );
  writeResult('consistency', rows, [
    `${DURATION_S} s, ${WRITES_PER_S} revocations/s from 2 auth writers (revocation script, drainer, heartbeats), ${REPLICAS} replicas and the seed's consumer each on its own RabbitMQ connection through a TCP proxy, Redis of its own; all in one Node process.`,
    `Faults every 3 s, round robin: ${faultList}.`,
    `Reads: ${READS_PER_TICK} jtis every 10 ms (half from the last 2 s of revocations, 1% forged or never revoked), asked of every replica and of the seed's consumer; a read matches when the source said the same of that jti at some moment of the last 1 s.`,
    `Cost phases: ${COST_PHASE_S} s each with no faults; a heartbeat is one Redis script read; a replica check is one too.`,
  ]);
}

await main();
