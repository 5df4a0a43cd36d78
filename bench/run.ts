// Runs the benchmarks, each in its own process (a fresh heap and JIT), then
// writes bench/results/REPORT.md (a summary of the headline figures, then
// every bench's table) and bench/results/REPORT.svg (the headline figures as
// a chart) from every bench/results/<name>.json.
//
//   npm run bench                   all of them
//   npm run bench -- read match     only the named ones (the others' last results are reported as such)
//   npm run bench -- --report-only  no bench: the report again from the results on disk
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { renderChart } from './chart.ts';
import type { BenchResult, Figure, Row } from './lib.ts';
import { fmt, fmtQuantity, headlineFigures, RESULTS_DIR } from './lib.ts';

const BENCH_DIR = import.meta.dirname;
const ORDER = [
  'read',
  'memory',
  'propagation',
  'consistency',
  'bootstrap',
  'authz',
  'cache-aside',
  'import',
  'match',
  'celery',
];

const available = readdirSync(BENCH_DIR)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.slice(0, -'.bench.ts'.length))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));

function rank(name: string): number {
  const i = ORDER.indexOf(name);
  return i === -1 ? ORDER.length : i;
}

const args = process.argv.slice(2).filter((a) => a !== '--');
const reportOnly = args.includes('--report-only');
const asked = args.filter((a) => a !== '--report-only');
const unknown = asked.filter((a) => !available.includes(a));
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.join(', ')}; available: ${available.join(', ')}`);
  process.exit(2);
}
const selected = reportOnly ? [] : asked.length > 0 ? available.filter((n) => asked.includes(n)) : available;

const loadBefore = os.loadavg();
const failed: string[] = [];
for (const name of selected) {
  const resultFile = join(RESULTS_DIR, `${name}.json`);
  rmSync(resultFile, { force: true }); // never report a stale figure as this run's
  console.log(`\n### ${name}`);
  const started = Date.now();
  const child = spawnSync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', join(BENCH_DIR, `${name}.bench.ts`)],
    {
      stdio: 'inherit',
      cwd: join(BENCH_DIR, '..'),
    },
  );
  const seconds = (Date.now() - started) / 1000;
  if (child.status !== 0 || !existsSync(resultFile)) {
    failed.push(name);
    console.error(`${name} failed (exit ${child.status ?? child.signal}) after ${fmt(seconds)} s`);
  } else {
    console.log(`${name} took ${fmt(seconds)} s`);
  }
}
const loadAfter = os.loadavg();

const results: BenchResult[] = available
  .filter((name) => existsSync(join(RESULTS_DIR, `${name}.json`)))
  .map((name) => JSON.parse(readFileSync(join(RESULTS_DIR, `${name}.json`), 'utf8')) as BenchResult);
const figures = headlineFigures(results);
// After --report-only, the results on disk are the report's run: none is marked as older.
const ranNow = reportOnly ? results.map((r) => r.name) : selected.filter((name) => !failed.includes(name));
writeFileSync(join(RESULTS_DIR, 'REPORT.svg'), renderChart(figures, { subtitle: chartSubtitle(results) }));
const report = buildReport(results, figures, ranNow);
writeFileSync(join(RESULTS_DIR, 'REPORT.md'), report);
console.log(`\n${report}`);
if (failed.length > 0) {
  console.error(`failed: ${failed.join(', ')}`);
  process.exit(1);
}

function loads(values: readonly number[]): string {
  return values.map((l) => l.toFixed(2)).join(' ');
}

/** 2026-11-22T09:11:14.070Z -> 2026-11-22 09:11 UTC */
function minute(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** When the results were written: 2026-11-22 10:41-10:46 UTC. */
function span(all: readonly BenchResult[]): string {
  const dates = all.map((r) => r.date).sort();
  const first = dates[0] ?? new Date().toISOString();
  const last = dates.at(-1) ?? first;
  return first.slice(0, 10) === last.slice(0, 10)
    ? `${first.slice(0, 10)} ${first.slice(11, 16)}-${last.slice(11, 16)} UTC`
    : `${minute(first)} - ${minute(last)}`;
}

/** The CPU the results were measured on (the newest result's), else this machine's. */
function cpuName(all: readonly BenchResult[]): { model: string; cores: number } {
  const machine = [...all].reverse().find((r) => r.machine)?.machine;
  const cpus = os.cpus();
  return machine
    ? { model: machine.cpu, cores: machine.cores }
    : { model: cpus[0]?.model ?? 'unknown cpu', cores: cpus.length };
}

/** Load average (1, 5, 15 min) at the first bench's start and at the last one's end. */
function loadSpan(all: readonly BenchResult[]): [number[], number[]] {
  const measured = all.filter((r) => r.machine).sort((a, b) => a.date.localeCompare(b.date));
  if (measured.length === 0) return [loadBefore, loadAfter];
  return [measured[0]!.machine!.load_before, measured.at(-1)!.machine!.load_after];
}

/** Date span of the results, the machine and the 1-min load average seen at the benches' starts and ends. */
function chartSubtitle(all: readonly BenchResult[]): string {
  const cpu = cpuName(all);
  const oneMin = all.flatMap((r) => (r.machine ? [r.machine.load_before[0]!, r.machine.load_after[0]!] : []));
  if (oneMin.length === 0) oneMin.push(loadBefore[0]!, loadAfter[0]!);
  const load = `load average (1 min) ${fmt(Math.min(...oneMin))}-${fmt(Math.max(...oneMin))}`;
  const node = all.find((r) => r.machine)?.machine?.node ?? process.version;
  return `${span(all)} · ${cpu.model}, ${cpu.cores} cores · node ${node} · ${load}`;
}

function buildReport(
  all: readonly BenchResult[],
  headline: readonly Figure[],
  now: readonly string[],
): string {
  const cpu = cpuName(all);
  const [firstLoad, lastLoad] = loadSpan(all);
  const when = (r: { name: string; date: string }): string =>
    `${minute(r.date)}${now.includes(r.name) ? '' : ', an earlier run'}`;
  const lines = [
    '# cachecast benchmarks',
    '',
    `- results: ${span(all)}${reportOnly ? ` (this report rebuilt from them at ${minute(new Date().toISOString())}; no bench ran)` : ''}`,
    `- node ${process.version} (${process.arch}), V8 ${process.versions.v8}`,
    `- cpu: ${cpu.model} x ${cpu.cores}, ${fmt(os.totalmem() / 2 ** 30)} GiB RAM, ${os.type()} ${os.release()}`,
    `- load average at the first bench's start / the last one's end: ${loads(firstLoad)} / ${loads(lastLoad)} (shared, noisy machine: read the ratios, which compare figures measured in the same run)`,
    ...(failed.length > 0
      ? [
          `- failed in this run: ${failed.join(', ')} (no figures from it below: its old result was removed before it ran)`,
        ]
      : []),
    '',
    '## Summary',
    '',
    'The headline figures. Every figure is lower-is-better (time, bytes). `baseline / value` > 1: faster or smaller',
    'than what a user would otherwise do, by that factor; `value / ceiling` >= 1: the overhead over the best possible',
    'for the same work. Both compare figures measured in the same run.',
    '',
    '| bench | figure | value | baseline | baseline / value | ceiling | value / ceiling |',
    '| --- | --- | ---: | --- | ---: | --- | ---: |',
    ...headline.map((f) => summaryRow(f, now.includes(f.bench) ? '' : ` (${minute(f.date)})`)),
    '',
    ...(headline.some((f) => !now.includes(f.bench))
      ? ['A date after the bench name: that figure is from an earlier run.', '']
      : []),
    '![The headline figures: speed-up vs baseline (log scale) and fraction of the ceiling reached](REPORT.svg)',
    '',
    '[REPORT.svg](REPORT.svg): the same figures as a chart.',
    '',
  ];
  for (const result of all) {
    const m = result.machine;
    lines.push(`## ${result.name} (${when(result)})`, '');
    if (m)
      lines.push(`Load average at its start / end: ${loads(m.load_before)} / ${loads(m.load_after)}.`, '');
    lines.push(
      '| metric | value | baseline | baseline / value | ceiling | value / ceiling | note |',
      '| --- | ---: | --- | ---: | --- | ---: | --- |',
    );
    for (const r of result.rows) lines.push(detailRow(r));
    lines.push('');
    for (const note of result.notes) lines.push(`- ${md(note)}`);
    if (result.notes.length > 0) lines.push('');
  }
  return lines.join('\n');
}

/** Text for a table cell: `|` escaped, and `<` too (GitHub would take `<jti>` for an HTML tag and drop it). */
function cell(text: string): string {
  return md(text).replace(/\|/g, '\\|');
}

function md(text: string): string {
  return text.replace(/</g, '&lt;');
}

function summaryRow(f: Figure, stale: string): string {
  const q = (n: number): string => fmtQuantity(n, f.unit);
  return `| ${[
    `${f.bench}${stale}`,
    cell(f.title),
    q(f.value),
    f.baseline ? `${cell(f.baseline.label)}: ${q(f.baseline.value)}` : '',
    f.baseline ? `x${fmt(f.baseline.ratio)}` : '',
    f.ceiling ? `${cell(f.ceiling.label)}: ${q(f.ceiling.value)}` : '',
    f.ceiling ? `x${fmt(f.ceiling.ratio)}` : '',
  ].join(' | ')} |`;
}

function detailRow(r: Row): string {
  const value = (n: number): string => `${fmt(n)} ${r.unit}`;
  return `| ${[
    cell(r.metric),
    value(r.value),
    r.baseline ? `${cell(r.baseline.label)}: ${value(r.baseline.value)}` : '',
    r.baseline_ratio === undefined ? '' : `x${fmt(r.baseline_ratio)}`,
    r.ceiling ? `${cell(r.ceiling.label)}: ${value(r.ceiling.value)}` : '',
    r.ratio_to_ceiling === undefined ? '' : `x${fmt(r.ratio_to_ceiling)}`,
    cell(r.note ?? ''),
  ].join(' | ')} |`;
}
