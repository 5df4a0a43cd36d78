// Shared helpers for the benchmarks: statistics, result rows and the JSON
// result file every bench writes (bench/run.ts turns them into REPORT.md).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const RESULTS_DIR = join(import.meta.dirname, 'results');

export const RABBITMQ_URL = process.env.RABBITMQ_URL || 'amqp://guest:guest@127.0.0.1:5672/';
/** The benches that touch Redis use DB 15 only, and flush it. */
export const REDIS_BENCH_URL = process.env.REDIS_BENCH_URL || 'redis://127.0.0.1:6379/15';

/** A figure compared with another, measured in the same run. */
export interface Reference {
  label: string;
  value: number;
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
}

export interface BenchResult {
  name: string;
  date: string;
  rows: Row[];
  notes: string[];
}

export function row(
  metric: string,
  value: number,
  unit: string,
  refs: { baseline?: Reference; ceiling?: Reference; note?: string } = {},
): Row {
  const out: Row = { metric, value, unit };
  if (refs.baseline) {
    out.baseline = refs.baseline;
    out.baseline_ratio = refs.baseline.value / value;
  }
  if (refs.ceiling) {
    out.ceiling = refs.ceiling;
    out.ratio_to_ceiling = value / refs.ceiling.value;
  }
  if (refs.note) out.note = refs.note;
  return out;
}

export function writeResult(name: string, rows: Row[], notes: string[] = []): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const result: BenchResult = { name, date: new Date().toISOString(), rows, notes };
  writeFileSync(join(RESULTS_DIR, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
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
