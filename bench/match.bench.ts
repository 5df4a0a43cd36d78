// Match cost: what the match worker does per task (replica.findOne on the
// match_label index) against the seed's "before" (seed 000 §1.1: a PostgreSQL
// round trip per match), at the sample catalog's size (13 characters) and at
// the seed's stated maximum (100).
//
// - replica.findOne('match_label', label): the replica loaded from PostgreSQL
//   through catalogSource, as the worker runs it.
// - ceiling: Map.get on a label -> Character map built once.
// - baseline "pg query": `SELECT ... FROM characters WHERE match_label = $1`
//   through pg (indexed), one query per match.
// - baseline "seed literal": `SELECT ... FROM characters` then a loop, as the
//   seed's evaluate_reward does (repository.get_all() + for ... if ...).
//
// Per-call latencies are timed one by one (hrtime): for the in-memory variants
// that includes the timer's own cost, reported as a diag row; their batch cost
// per call is reported too.
import { randomUUID } from 'node:crypto';
import { testDatabase } from '../test/support/env.ts';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import type { Character } from '../src/datasets/catalog.ts';
import { catalogDataset, CHARACTER_COLUMNS } from '../src/datasets/catalog.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { catalogSource } from '../src/sources/catalog-source.ts';
import type { Row } from './lib.ts';
import { fmt, median, nowNs, percentile, printRows, row, writeResult } from './lib.ts';

const SIZES = [13, 100];
const MEMORY_OPS = 200_000; // individually timed in-memory lookups per variant
const BATCH_RUNS = 5; // batch runs of MEMORY_OPS for the per-call batch cost
const PG_OPS = Number(process.env.BENCH_MATCH_PG_OPS ?? 3000);
const PG_WARMUP = 200;
const MISS_EVERY = 10; // one lookup in ten is a label no character has

let sink = 0;

function characters(n: number): Character[] {
  return Array.from({ length: n }, (_, i) => ({
    id: randomUUID(),
    code: `eco-${i}`,
    name: `Character ${i}`,
    match_label: `label-${i}`,
    type_label: 'recyclable',
    dialog: `Dialog line for character ${i}, about as long as the sample catalog's.`,
    is_default: i === 0,
  }));
}

/** Lookup labels: a random hit, or a miss every MISS_EVERY. */
function labels(catalog: Character[], n: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    i % MISS_EVERY === MISS_EVERY - 1
      ? `missing-${i % 7}`
      : Buffer.from(catalog[Math.floor(Math.random() * catalog.length)]!.match_label).toString(),
  );
}

function timeEach(keys: readonly string[], fn: (key: string) => Character | null | undefined): number[] {
  const out = new Array<number>(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const t = nowNs();
    const c = fn(keys[i]!);
    out[i] = Number(nowNs() - t);
    if (c) sink += c.code.length;
  }
  return out;
}

function batchNs(keys: readonly string[], fn: (key: string) => Character | null | undefined): number {
  const t = nowNs();
  let s = 0;
  for (let i = 0; i < keys.length; i++) {
    const c = fn(keys[i]!);
    if (c) s += c.code.length;
  }
  sink += s;
  return Number(nowNs() - t) / keys.length;
}

async function timeEachAsync(
  keys: readonly string[],
  fn: (key: string) => Promise<Character | null | undefined>,
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < keys.length; i++) {
    const t = nowNs();
    const c = await fn(keys[i]!);
    out.push(Number(nowNs() - t));
    if (c) sink += c.code.length;
  }
  return out;
}

interface SizeResult {
  size: number;
  replica: number[];
  replicaBatch: number;
  map: number[];
  mapBatch: number;
  timer: number[];
  pgQuery: number[];
  pgSeed: number[];
}

async function measure(size: number): Promise<SizeResult> {
  // A migrated schema of its own, dropped afterwards.
  const db = await testDatabase();
  const { pool } = db;
  try {
    const catalog = characters(size);
    for (const c of catalog) {
      await pool.query(
        `INSERT INTO characters (id, code, name, match_label, type_label, dialog, is_default)
         VALUES ($1,$2,$3,$4,$5,$6,$7)`,
        [c.id, c.code, c.name, c.match_label, c.type_label, c.dialog, c.is_default],
      );
    }
    await pool.query('ANALYZE characters');

    const replica = new ReplicatedCache<Character>({
      dataset: catalogDataset,
      bus: new MemoryBus(new MemoryBroker()),
      source: catalogSource(pool),
      versionCheckIntervalMs: 0,
    });
    await replica.start();
    if (replica.size !== size) throw new Error(`replica holds ${replica.size}, expected ${size}`);
    const byLabel = new Map<string, Character>();
    for (const c of replica.values()) if (!byLabel.has(c.match_label)) byLabel.set(c.match_label, c);

    const findOne = (label: string) => replica.findOne('match_label', label) ?? null;
    const mapGet = (label: string) => byLabel.get(label) ?? null;
    const pgQuery = async (label: string): Promise<Character | null> => {
      const { rows } = await pool.query<Character>(
        `SELECT ${CHARACTER_COLUMNS} FROM characters WHERE match_label = $1 LIMIT 1`,
        [label],
      );
      return rows[0] ?? null;
    };
    const pgSeed = async (label: string): Promise<Character | null> => {
      const { rows } = await pool.query<Character>(`SELECT ${CHARACTER_COLUMNS} FROM characters`);
      for (const c of rows) if (c.match_label === label) return c;
      return null;
    };

    // Correctness first: every variant answers the same.
    for (const label of labels(catalog, 200)) {
      const want = mapGet(label)?.id ?? null;
      for (const got of [findOne(label), await pgQuery(label), await pgSeed(label)])
        if ((got?.id ?? null) !== want) throw new Error(`variants disagree on ${label}`);
    }

    const memKeys = labels(catalog, MEMORY_OPS);
    // Warm-up (JIT), then measured passes.
    timeEach(memKeys, findOne);
    timeEach(memKeys, mapGet);
    const replicaTimes = timeEach(memKeys, findOne);
    const mapTimes = timeEach(memKeys, mapGet);
    const timerTimes = timeEach(memKeys, () => null);
    const replicaBatch: number[] = [];
    const mapBatch: number[] = [];
    for (let r = 0; r < BATCH_RUNS; r++) {
      replicaBatch.push(batchNs(memKeys, findOne));
      mapBatch.push(batchNs(memKeys, mapGet));
    }

    const pgKeys = labels(catalog, PG_OPS + PG_WARMUP);
    await timeEachAsync(pgKeys.slice(0, PG_WARMUP), pgQuery);
    await timeEachAsync(pgKeys.slice(0, PG_WARMUP), pgSeed);
    // Interleaved halves so that machine noise hits both baselines alike.
    const half = Math.floor(PG_OPS / 2);
    const measured = pgKeys.slice(PG_WARMUP);
    const q1 = await timeEachAsync(measured.slice(0, half), pgQuery);
    const s1 = await timeEachAsync(measured.slice(0, half), pgSeed);
    const q2 = await timeEachAsync(measured.slice(half), pgQuery);
    const s2 = await timeEachAsync(measured.slice(half), pgSeed);

    await replica.close();
    return {
      size,
      replica: replicaTimes,
      replicaBatch: median(replicaBatch),
      map: mapTimes,
      mapBatch: median(mapBatch),
      timer: timerTimes,
      pgQuery: [...q1, ...q2],
      pgSeed: [...s1, ...s2],
    };
  } finally {
    await db.drop();
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const notes: string[] = [];
  for (const size of SIZES) {
    const r = await measure(size);
    const ns = (xs: number[], p: number) => percentile(xs, p);
    for (const p of [50, 99]) {
      const value = ns(r.replica, p);
      rows.push(
        row(`replica.findOne p${p}, ${size} characters`, value, 'ns', {
          ceiling: { label: `Map.get p${p}`, value: ns(r.map, p) },
          baseline: { label: `pg WHERE match_label = $1 p${p}`, value: ns(r.pgQuery, p) },
          headline: p === 50 ? `match: findOne on match_label, ${size} characters, p50` : undefined,
          note: `seed literal (select all + loop) p${p}: ${fmt(ns(r.pgSeed, p) / 1000)} us -> x${fmt(ns(r.pgSeed, p) / value)} better`,
        }),
      );
    }
    rows.push(
      row(`replica.findOne per call in a loop, ${size} characters`, r.replicaBatch, 'ns', {
        ceiling: { label: 'Map.get per call in a loop', value: r.mapBatch },
        baseline: { label: 'pg WHERE match_label = $1 p50', value: ns(r.pgQuery, 50) },
      }),
      row(`pg WHERE match_label = $1 p50, ${size} characters`, ns(r.pgQuery, 50) / 1000, 'us', {
        note: `p99 ${fmt(ns(r.pgQuery, 99) / 1000)} us`,
      }),
      row(`seed literal: pg select all + loop p50, ${size} characters`, ns(r.pgSeed, 50) / 1000, 'us', {
        ceiling: { label: 'pg WHERE match_label = $1 p50', value: ns(r.pgQuery, 50) / 1000 },
        note: `p99 ${fmt(ns(r.pgSeed, 99) / 1000)} us`,
      }),
      row(`diag: hrtime pair around nothing p50, ${size} characters`, ns(r.timer, 50), 'ns', {
        note: 'included in the individually timed in-memory figures',
      }),
    );
  }
  printRows('match cost: replica vs the seed (PostgreSQL per match)', rows);
  notes.push(
    `In-memory variants: ${MEMORY_OPS} individually timed lookups (after a warm-up pass) plus the median of ${BATCH_RUNS} batch runs; PostgreSQL variants: ${PG_OPS} sequential queries each over one pooled connection on localhost, interleaved, after ${PG_WARMUP} warm-up queries.`,
    `1 lookup in ${MISS_EVERY} is a label no character has. The replica is loaded from PostgreSQL through catalogSource; characters are ~200-byte rows.`,
    'localhost PostgreSQL is the best case for the baselines: the seed measured ~50 ms per get_all() in its cluster.',
  );
  writeResult('match', rows, notes);
  if (sink === -1) console.log('unreachable');
}

await main();
