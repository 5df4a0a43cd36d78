// The cross-process rounds (see bench/propagation-procs.ts) and their rows.
import type { Row } from './lib.ts';
import { fmt, percentile, row, sleepMs } from './lib.ts';
import type { CachecastWriter, Systems } from './propagation-procs.ts';
import { findBeamPid, nextJti, openWriters, processCpuMs, ReaderPool } from './propagation-procs.ts';

const sizes = (name: string, fallback: string): number[] =>
  (process.env[name] ?? fallback).split(',').filter(Boolean).map(Number);

/** Round A (against BentoCache): reader processes, one reader of each system per process. */
const VERSUS_SIZES = sizes('BENCH_PROPAGATION_PROC_SIZES', '2,8,32');
/** Round B (the cost curve). */
const COST_SIZES = sizes('BENCH_PROPAGATION_COST_SIZES', '2,8,32,128');
/** Reader processes at most; a larger fleet puts several replicas (each on its own connection) in each. */
const MAX_PROCS = Number(process.env.BENCH_PROPAGATION_PROCS ?? 32);
const VERSUS_EVENTS = Number(process.env.BENCH_PROPAGATION_PROC_EVENTS ?? 300);
const COST_EVENTS = Number(process.env.BENCH_PROPAGATION_COST_EVENTS ?? 200);
/** Fewer at 128: each event costs ~4x the 32-replica one. */
const COST_EVENTS_LARGE = Number(process.env.BENCH_PROPAGATION_COST_EVENTS_LARGE ?? 100);
const BLOCK = 20;
const WARMUP = 10;

type CostKind = 'persistent' | 'transient' | 'stream';
const COST_KINDS: CostKind[] = ['persistent', 'transient', 'stream'];

interface CostSamples {
  ms: Record<CostKind, number[]>;
  /** Broker CPU per event in each block, net of its idle rate, µs. */
  cpuUs: Record<CostKind, number[]>;
  idleCpuPerS: number;
}

export interface ProcessRounds {
  rows: Row[];
  notes: string[];
}

export async function crossProcessRounds(
  rabbitmqUrl: string,
  redisUrl: string,
  suffix: string,
): Promise<ProcessRounds> {
  const all = [...new Set([...VERSUS_SIZES, ...COST_SIZES])].sort((a, b) => a - b);
  if (all.length === 0) return { rows: [], notes: [] };
  const beam = findBeamPid();
  const procCount = Math.min(MAX_PROCS, Math.max(...all));
  const t0 = Date.now();
  const pool = await ReaderPool.spawn(procCount);
  const systems = await openWriters(rabbitmqUrl, redisUrl, suffix);
  console.log(`${procCount} reader processes up in ${fmt((Date.now() - t0) / 1000)} s`);
  const versus = new Map<number, { cc: number[]; bento: number[] }>();
  const cost = new Map<number, CostSamples>();
  let seq = 0;
  try {
    for (const n of all) {
      const t = Date.now();
      const procs = Math.min(n, procCount);
      const perProc = Math.ceil(n / procs);
      if (procs * perProc !== n) throw new Error(`${n} replicas do not split over ${procs} processes`);
      const common = { rabbitmqUrl, redisUrl };
      const withBento = VERSUS_SIZES.includes(n) && perProc === 1;
      await pool.open('cc', procs, perProc, { ...common, base: systems.bases.cc });
      if (COST_SIZES.includes(n))
        await pool.open('stream', procs, perProc, { ...common, base: systems.bases.stream });
      if (withBento) await pool.open('bento', procs, 1, { ...common, base: systems.bases.bento, key: 'k' });
      if (withBento) {
        // BentoCache's Redis bus subscribes in the background: write until every reader saw a change.
        for (let attempt = 1; ; attempt++) {
          const value = ++seq;
          const probe = pool.time('bento', n, 'k', value, () => systems.bento.set({ key: 'k', value }), 2000);
          if (
            await probe.then(
              () => true,
              () => attempt >= 15,
            )
          )
            break;
        }
        const s = { cc: [] as number[], bento: [] as number[] };
        for (let i = 0; i < WARMUP + VERSUS_EVENTS; i++) {
          const bentoFirst = i % 2 === 0;
          const value = ++seq;
          const bentoEvent = (): Promise<number> =>
            pool.time('bento', n, 'k', value, () => systems.bento.set({ key: 'k', value }));
          const jti = nextJti();
          const ccEvent = (): Promise<number> =>
            pool.time('cc', n, jti, undefined, () => systems.persistent.revoke(jti));
          const first = bentoFirst ? await bentoEvent() : await ccEvent();
          const second = bentoFirst ? await ccEvent() : await bentoEvent();
          if (i < WARMUP) continue;
          s.bento.push(bentoFirst ? first : second);
          s.cc.push(bentoFirst ? second : first);
        }
        versus.set(n, s);
      }
      if (COST_SIZES.includes(n)) {
        const events = n > 32 ? COST_EVENTS_LARGE : COST_EVENTS;
        cost.set(n, await costRound(pool, systems, n, events, beam));
      }
      if (withBento) await pool.close('bento', procs);
      if (COST_SIZES.includes(n)) await pool.close('stream', procs);
      await pool.close('cc', procs);
      console.log(
        `cross-process N=${n} (${procs} processes x ${perProc}) in ${fmt((Date.now() - t) / 1000)} s`,
      );
    }
  } finally {
    await systems.close();
    await pool.exit();
  }
  return { rows: buildRows(versus, cost, procCount, beam !== undefined), notes: buildNotes(procCount, beam) };
}

async function costRound(
  pool: ReaderPool,
  systems: Systems,
  n: number,
  events: number,
  beam: number | undefined,
): Promise<CostSamples> {
  const writers: Record<CostKind, CachecastWriter> = {
    persistent: systems.persistent,
    transient: systems.transient,
    stream: systems.stream,
  };
  const readerSys = (k: CostKind): 'cc' | 'stream' => (k === 'stream' ? 'stream' : 'cc');
  // Warm every path once, then read the broker's idle rate (heartbeats, other users) to net it out.
  for (const k of COST_KINDS) {
    for (let i = 0; i < WARMUP; i++) {
      const jti = nextJti();
      await pool.time(readerSys(k), n, jti, undefined, () => writers[k].revoke(jti));
    }
  }
  let idleCpuPerS = 0;
  if (beam !== undefined) {
    const c0 = processCpuMs(beam);
    const t0 = Date.now();
    await sleepMs(1000);
    idleCpuPerS = ((processCpuMs(beam) - c0) * 1000) / (Date.now() - t0);
  }
  const s: CostSamples = {
    ms: { persistent: [], transient: [], stream: [] },
    cpuUs: { persistent: [], transient: [], stream: [] },
    idleCpuPerS,
  };
  const blocks = Math.ceil(events / BLOCK);
  for (let b = 0; b < blocks; b++) {
    for (let j = 0; j < COST_KINDS.length; j++) {
      // Rotate which kind goes first so none always follows the same one.
      const k = COST_KINDS[(b + j) % COST_KINDS.length]!;
      const c0 = beam === undefined ? 0 : processCpuMs(beam);
      const t0 = Date.now();
      for (let i = 0; i < BLOCK; i++) {
        const jti = nextJti();
        s.ms[k].push(await pool.time(readerSys(k), n, jti, undefined, () => writers[k].revoke(jti)));
      }
      if (beam !== undefined) {
        const netMs = processCpuMs(beam) - c0 - (idleCpuPerS * (Date.now() - t0)) / 1000;
        s.cpuUs[k].push((netMs * 1000) / BLOCK);
      }
    }
  }
  return s;
}

function buildRows(
  versus: Map<number, { cc: number[]; bento: number[] }>,
  cost: Map<number, CostSamples>,
  procCount: number,
  haveCpu: boolean,
): Row[] {
  const rows: Row[] = [];
  for (const [n, s] of versus) {
    for (const p of [50, 99]) {
      const cc = percentile(s.cc, p);
      const bento = percentile(s.bento, p);
      rows.push(
        row(`cross-process propagation p${p}, ${n} reader processes`, cc, 'ms', {
          baseline: { label: `BentoCache (memory L1, Redis L2, Redis bus) p${p}`, value: bento },
          ...(p === 99
            ? { headline: `write -> readable in all ${n} reader processes, p99 (vs BentoCache)` }
            : {}),
          note: `${s.cc.length} events each, interleaved; cachecast/BentoCache x${fmt(cc / bento)}`,
        }),
      );
    }
  }
  for (const [n, s] of cost) {
    const where = n <= procCount ? `${n} processes` : `${procCount} processes x ${n / procCount}`;
    for (const p of [50, 99]) {
      const persistent = percentile(s.ms.persistent, p);
      const ref = { label: `durable queues, persistent events p${p}`, value: persistent };
      rows.push(
        row(
          `cost curve: propagation p${p}, ${n} replicas (${where}), durable queues + persistent events`,
          persistent,
          'ms',
          {
            note: `${s.ms.persistent.length} events per kind, in blocks of ${BLOCK} cycling with the two below`,
          },
        ),
        row(
          `cost curve: propagation p${p}, ${n} replicas, durable queues + transient events`,
          percentile(s.ms.transient, p),
          'ms',
          {
            baseline: ref,
          },
        ),
        row(`cost curve: propagation p${p}, ${n} replicas, one stream`, percentile(s.ms.stream, p), 'ms', {
          baseline: ref,
        }),
      );
    }
    if (!haveCpu) continue;
    // The median block: the broker is shared, and another user's burst lands in some blocks only.
    const per = (k: CostKind): number => percentile(s.cpuUs[k], 50);
    const queues = per('persistent');
    const note = `broker idle ${fmt(s.idleCpuPerS)} ms CPU/s netted out`;
    rows.push(
      row(`broker CPU per event, ${n} replicas, durable queues + persistent events`, queues, 'us', { note }),
      row(`broker CPU per event, ${n} replicas, durable queues + transient events`, per('transient'), 'us', {
        baseline: { label: 'durable queues, persistent events', value: queues },
        note,
      }),
      row(`broker CPU per event, ${n} replicas, one stream`, per('stream'), 'us', {
        baseline: { label: 'durable queues, persistent events', value: queues },
        note,
      }),
    );
  }
  return rows;
}

function buildNotes(procCount: number, beam: number | undefined): string[] {
  return [
    `Cross-process rounds: up to ${procCount} reader processes (node + tsx), reused by every size; a size above ${procCount} puts several replicas in each process, each on its own AMQP connection. Writers run in the coordinator process; readers report over the IPC channel of fork().`,
    "cachecast: the writer is the auth service's Revocations (Redis script, then publish with confirm); each reader is a ReplicatedCache over RabbitMQBus (blacklist source in Redis) and reports from its onApplied hook once has(jti) is true. BentoCache: the writer set()s one key (memory L1, Redis L2, Redis bus); each reader holds the key in L1, and on bus:message:received (L1 invalidated) get()s it again and reports once it returns the new value. Both are timed from just before the write until the last reader reported; one event in flight.",
    'Against BentoCache the two systems alternate event by event (which goes first alternating too), on the same reader processes (each holds one reader of each system; only one system is active at a time).',
    beam === undefined
      ? 'Broker CPU: beam.smp not found in /proc, not measured.'
      : "Broker CPU per event: beam.smp utime + stime from /proc/<pid>/stat (10 ms ticks) around each block of 20 events (the median block is reported), less the broker's idle rate measured over 1 s before the size's blocks; the broker is shared with whatever else runs on this machine.",
    'Stream: one stream queue per dataset (x-queue-type stream), every replica an AMQP 0-9-1 consumer with x-stream-offset next, basic.qos 256, manual acks (bench/stream-bus.ts, a bench adapter, not a product one).',
  ];
}
