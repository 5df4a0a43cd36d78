// Shared helpers for the benchmarks: statistics, result rows and the JSON
// result file every bench writes (bench/run.ts turns them into REPORT.md).
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { RedisClient } from '../src/redis/client.ts';
import { scanKeys } from '../src/redis/client.ts';
// @ts-expect-error a plain .mjs script shared with the test runner: typed by its use here
import { ensureVhost as ensureVhostUntyped } from '../scripts/rabbit-vhost.mjs';

const ensureVhost = ensureVhostUntyped as (name: string) => string | undefined;

export const RESULTS_DIR = join(import.meta.dirname, 'results');

let rabbitmqUrl: string | undefined;
/**
 * RABBITMQ_URL, or a vhost of the benchmarks' own (the exchange and queue
 * names are fixed), so no test or running stack sees their events and no
 * benchmark purges a stack's queue. Made on first use only.
 */
export function benchRabbitmqUrl(): string {
  rabbitmqUrl ??= process.env.RABBITMQ_URL || ensureVhost('cachecast-bench');
  if (!rabbitmqUrl)
    throw new Error('set RABBITMQ_URL to a vhost for the benchmarks (rabbitmqctl could not make one)');
  return rabbitmqUrl;
}
/** The benches that touch Redis use DB 15 only, and flush it. */
export const REDIS_BENCH_URL = process.env.REDIS_BENCH_URL || 'redis://127.0.0.1:6379/15';

/** A figure compared with another, measured in the same run. */
export interface Reference {
  label: string;
  value: number;
}

/**
 * Marks a row as a headline figure: the summary table and the chart in
 * REPORT.md / REPORT.svg show it under `title`. `ceiling` is the ceiling the
 * summary compares it with when that is not the row's own (propagation: the
 * same fanout to N raw consumers, where the row's ceiling is 1 consumer).
 */
export interface Headline {
  title: string;
  ceiling?: Reference;
}

/**
 * One figure. Every metric is "lower is better" (ns, bytes, ms, s), so
 * `ratio_to_ceiling` = value / ceiling (>= 1: overhead over the best possible)
 * and `baseline_ratio` = baseline / value (> 1: better than the alternative).
 */
export interface Row {
  metric: string;
  value: number;
  unit: string;
  baseline?: Reference;
  ceiling?: Reference;
  ratio_to_ceiling?: number;
  baseline_ratio?: number;
  note?: string;
  headline?: Headline;
}

/** The machine a bench ran on, and its load average (1, 5, 15 min) when it started and ended. */
export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  load_before: number[];
  load_after: number[];
}

export interface BenchResult {
  name: string;
  date: string;
  rows: Row[];
  notes: string[];
  /** Absent in results written before it was recorded. */
  machine?: Machine;
}

/** Read when a bench process imports this module, i.e. as it starts. */
const LOAD_AT_START = os.loadavg();

/** baseline / value and value / ceiling: the one place the two ratios are computed. */
export function ratios(
  value: number,
  refs: { baseline?: Reference | undefined; ceiling?: Reference | undefined },
): { baseline_ratio?: number; ratio_to_ceiling?: number } {
  return {
    ...(refs.baseline ? { baseline_ratio: refs.baseline.value / value } : {}),
    ...(refs.ceiling ? { ratio_to_ceiling: value / refs.ceiling.value } : {}),
  };
}

export function row(
  metric: string,
  value: number,
  unit: string,
  refs: { baseline?: Reference; ceiling?: Reference; note?: string; headline?: string | Headline } = {},
): Row {
  const out: Row = { metric, value, unit };
  const { baseline_ratio, ratio_to_ceiling } = ratios(value, refs);
  if (refs.baseline) {
    out.baseline = refs.baseline;
    out.baseline_ratio = baseline_ratio;
  }
  if (refs.ceiling) {
    out.ceiling = refs.ceiling;
    out.ratio_to_ceiling = ratio_to_ceiling;
  }
  if (refs.note) out.note = refs.note;
  if (refs.headline)
    out.headline = typeof refs.headline === 'string' ? { title: refs.headline } : refs.headline;
  return out;
}

export function writeResult(name: string, rows: Row[], notes: string[] = []): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const cpus = os.cpus();
  const machine: Machine = {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    node: process.version,
    load_before: LOAD_AT_START.map(round2),
    load_after: os.loadavg().map(round2),
  };
  const result: BenchResult = { name, date: new Date().toISOString(), rows, notes, machine };
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

// ---------------------------------------------------------------- headline figures

/** A reference with its ratio (see Figure). */
export interface Comparison extends Reference {
  ratio: number;
}

/** A headline figure as the summary shows it: one per row marked `headline`. */
export interface Figure {
  bench: string;
  /** The bench's run (ISO date). */
  date: string;
  title: string;
  metric: string;
  value: number;
  unit: string;
  /** ratio = baseline / value: > 1 = faster (or smaller) than the baseline, by that factor. */
  baseline?: Comparison;
  /** ratio = value / ceiling: >= 1 = the overhead over the best possible; 1 / ratio = the fraction of it reached. */
  ceiling?: Comparison;
}

/** The headline figures of every result, in the results' order, each with its baseline and ceiling. */
export function headlineFigures(results: readonly BenchResult[]): Figure[] {
  const out: Figure[] = [];
  for (const result of results) {
    for (const r of result.rows) {
      if (!r.headline) continue;
      const baseline = r.baseline;
      const ceiling = r.headline.ceiling ?? r.ceiling;
      const { baseline_ratio, ratio_to_ceiling } = ratios(r.value, { baseline, ceiling });
      out.push({
        bench: result.name,
        date: result.date,
        title: r.headline.title,
        metric: r.metric,
        value: r.value,
        unit: r.unit,
        ...(baseline ? { baseline: { ...baseline, ratio: baseline_ratio! } } : {}),
        ...(ceiling ? { ceiling: { ...ceiling, ratio: ratio_to_ceiling! } } : {}),
      });
    }
  }
  return out;
}

export function printRows(title: string, rows: Row[]): void {
  console.log(`\n== ${title}`);
  for (const r of rows) {
    let line = `${r.metric}: ${fmt(r.value)} ${r.unit}`;
    if (r.ceiling)
      line += ` | ceiling ${r.ceiling.label} ${fmt(r.ceiling.value)} -> x${fmt(r.ratio_to_ceiling!)}`;
    if (r.baseline)
      line += ` | baseline ${r.baseline.label} ${fmt(r.baseline.value)} -> x${fmt(r.baseline_ratio!)} better`;
    if (r.note) line += ` | ${r.note}`;
    console.log(line);
  }
}

/** 3 significant digits, no exponent for the sizes we print. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  if (abs >= 100) return n.toFixed(0);
  if (abs >= 10) return n.toFixed(1);
  if (abs >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** 1000000 -> 1M, 100000 -> 100k, 13 -> 13: counts in headline titles. */
export function fmtCount(n: number): string {
  if (n >= 1e6 && n % 1e6 === 0) return `${n / 1e6}M`;
  if (n >= 1e3 && n % 1e3 === 0) return `${n / 1e3}k`;
  return String(n);
}

const TIME_UNITS: ReadonlyArray<readonly [string, number]> = [
  ['s', 1],
  ['ms', 1e-3],
  ['µs', 1e-6],
  ['ns', 1e-9],
];

/** `fmt` with its unit, a time rescaled to the unit that reads best (1138 ns/op -> 1.14 µs/op). */
export function fmtQuantity(value: number, unit: string): string {
  const slash = unit.indexOf('/');
  const base = slash === -1 ? unit : unit.slice(0, slash);
  const per = slash === -1 ? '' : unit.slice(slash);
  const scale = TIME_UNITS.find(([name]) => name === (base === 'us' ? 'µs' : base))?.[1];
  if (scale === undefined || !Number.isFinite(value)) return `${fmt(value)} ${unit}`;
  const seconds = value * scale;
  const [name, size] =
    TIME_UNITS.find(([, size]) => Math.abs(seconds) >= size * 0.9995) ?? TIME_UNITS.at(-1)!;
  return `${fmt(seconds / size)} ${name}${per}`;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Nearest-rank percentile. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

export function elapsedMs(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e6;
}

export function gc(passes = 4): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with node --expose-gc');
  // Several passes: weak references and finalizers release memory over two cycles.
  for (let i = 0; i < passes; i++) collect();
}

export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A fresh copy of a string (its own object, its hash not yet computed), as a parsed JWT's jti would be. */
export function freshCopy(text: string): string {
  return Buffer.from(text, 'latin1').toString('latin1');
}

// ---------------------------------------------------------------- Redis key helpers
// Shared by the benches that fill Redis with `blacklist:*`-style keys (bootstrap, authz).

/**
 * Writes `n` keys `<prefix><uuid>` = '1' with a random EX of 600-3600 s:
 * batches of 10k pipelined SETs, 4 batches in flight.
 */
export async function loadExpiringKeys(client: RedisClient, prefix: string, n: number): Promise<void> {
  const batch = 10_000;
  const inFlight = 4;
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const from = next;
        next = Math.min(n, next + batch);
        const writes: Array<Promise<unknown>> = [];
        for (let i = from; i < next; i++) {
          const ttl = 600 + Math.floor(Math.random() * 3001);
          writes.push(
            client.set(`${prefix}${randomUUID()}`, '1', { expiration: { type: 'EX', value: ttl } }),
          );
        }
        await Promise.all(writes);
      }
    }),
  );
}

/** The floor for any SCAN-based load: walk the keyspace under `prefix`, read nothing else. */
export async function bareScan(
  client: RedisClient,
  prefix: string,
  count: number,
): Promise<{ ms: number; seen: number }> {
  const start = nowNs();
  let seen = 0;
  for await (const keys of scanKeys(client, `${prefix}*`, count)) seen += keys.length;
  return { ms: elapsedMs(start), seen };
}

/** CPU time Redis has used so far (user + sys), ms: read before and after a step to see its share. */
export async function redisCpuMs(client: RedisClient): Promise<number> {
  const info = await client.info('cpu');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1000;
}
