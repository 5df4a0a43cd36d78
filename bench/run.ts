// Runs the benchmarks, each in its own process (a fresh heap and JIT), then
// writes bench/results/REPORT.md from every bench/results/<name>.json.
//
//   npm run bench              all of them
//   npm run bench -- read      only the named ones (read, memory, propagation, bootstrap)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { BenchResult, Row } from './lib.ts';
import { fmt, RESULTS_DIR } from './lib.ts';

const BENCH_DIR = import.meta.dirname;
const ORDER = ['read', 'memory', 'propagation', 'bootstrap', 'import', 'match', 'celery'];

const available = readdirSync(BENCH_DIR)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.slice(0, -'.bench.ts'.length))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));

function rank(name: string): number {
  const i = ORDER.indexOf(name);
  return i === -1 ? ORDER.length : i;
}

const asked = process.argv.slice(2).filter((a) => a !== '--');
const unknown = asked.filter((a) => !available.includes(a));
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.join(', ')}; available: ${available.join(', ')}`);
  process.exit(2);
}
const selected = asked.length > 0 ? available.filter((n) => asked.includes(n)) : available;

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

const report = buildReport(selected, loadBefore);
writeFileSync(join(RESULTS_DIR, 'REPORT.md'), report);
console.log(`\n${report}`);
if (failed.length > 0) {
  console.error(`failed: ${failed.join(', ')}`);
  process.exit(1);
}

function buildReport(ranNow: readonly string[], load: number[]): string {
  const results: BenchResult[] = available
    .filter((name) => existsSync(join(RESULTS_DIR, `${name}.json`)))
    .map((name) => JSON.parse(readFileSync(join(RESULTS_DIR, `${name}.json`), 'utf8')) as BenchResult);
  const cpus = os.cpus();
  const lines = [
    '# cachecast benchmarks',
    '',
    `- date: ${new Date().toISOString()}`,
    `- node ${process.version} (${process.arch}), V8 ${process.versions.v8}`,
    `- cpu: ${cpus[0]?.model ?? 'unknown'} x ${cpus.length}, ${fmt(os.totalmem() / 2 ** 30)} GiB RAM, ${os.type()} ${os.release()}`,
    `- load average before / after: ${load.map((l) => l.toFixed(2)).join(' ')} / ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} (shared, noisy machine: read the ratios, which compare figures measured in the same run)`,
    '',
    'Every figure is lower-is-better. `value / ceiling` >= 1 is the overhead over the best possible;',
    '`baseline / value` > 1 means faster or smaller than the alternative a user would otherwise pick.',
    '',
    '| bench | metric | value | baseline | baseline / value | ceiling | value / ceiling | note |',
    '| --- | --- | ---: | --- | ---: | --- | ---: | --- |',
  ];
  for (const result of results) {
    for (const r of result.rows) lines.push(tableRow(result.name, r));
  }
  lines.push('');
  for (const result of results) {
    const when = ranNow.includes(result.name) ? 'this run' : 'an earlier run';
    lines.push(`## ${result.name} (${when}, ${result.date})`, '');
    for (const note of result.notes) lines.push(`- ${note}`);
    lines.push('');
  }
  return lines.join('\n');
}

function tableRow(bench: string, r: Row): string {
  const cell = (text: string): string => text.replace(/\|/g, '\\|');
  const value = (n: number): string => `${fmt(n)} ${r.unit}`;
  return `| ${[
    bench,
    cell(r.metric),
    value(r.value),
    r.baseline ? `${cell(r.baseline.label)}: ${value(r.baseline.value)}` : '',
    r.baseline_ratio === undefined ? '' : `x${fmt(r.baseline_ratio)}`,
    r.ceiling ? `${cell(r.ceiling.label)}: ${value(r.ceiling.value)}` : '',
    r.ratio_to_ceiling === undefined ? '' : `x${fmt(r.ratio_to_ceiling)}`,
    cell(r.note ?? ''),
  ].join(' | ')} |`;
}
