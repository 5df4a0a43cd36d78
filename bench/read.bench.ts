// Read cost at 1M blacklist entries: ReplicatedCache.get/has against a plain
// Map (the ceiling: the replica is a Map plus checks) and bentocache's memory
// tier (the baseline: what a user would otherwise reach for).
//
// Lookups follow a pre-generated random order over all 1M keys, so the table
// is cold in the CPU caches as in production; lookup keys are fresh string
// copies (not the stored key objects), like a jti parsed out of a request.
// Keys are flat strings (see freshCopy): a cons string key, as randomUUID()
// returns, makes every Map lookup 2-4x slower and would measure V8, not us.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import { blacklistDataset, blacklistExpireAtMs, toBlacklistValue } from '../src/datasets/blacklist.ts';
import { systemClock } from '../src/clock.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { MemorySource } from '../src/sources/memory-source.ts';
import type { Row } from './lib.ts';
import {
  elapsedMs,
  fmt,
  fmtCount,
  freshCopy,
  gc,
  median,
  nowNs,
  printRows,
  row,
  writeResult,
} from './lib.ts';

const N = Number(process.env.BENCH_READ_ENTRIES ?? 1_000_000);
const PASSES = 2; // lookups per sync run = PASSES * N
const RUNS = 5;
const BENTO_OPS = Math.min(N, 100_000); // bentocache is async and ~100x slower: fewer ops per run

/** Results are summed into this so no lookup loop is dead code. */
let sink = 0;

function check(label: string, got: number, want: number): void {
  if (got !== want) throw new Error(`${label}: checksum ${got}, expected ${want}`);
}

// One function per variant keeps every call site monomorphic.
function mapGet(map: Map<string, number>, keys: readonly string[], passes: number): number {
  let sum = 0;
  for (let p = 0; p < passes; p++) {
    for (let i = 0; i < keys.length; i++) {
      const v = map.get(keys[i]!);
      if (v !== undefined) sum += v;
    }
  }
  return sum;
}

function mapHas(map: Map<string, number>, keys: readonly string[], passes: number): number {
  let count = 0;
  for (let p = 0; p < passes; p++) {
    for (let i = 0; i < keys.length; i++) if (map.has(keys[i]!)) count++;
  }
  return count;
}

function replicaGet(replica: ReplicatedCache<number>, keys: readonly string[], passes: number): number {
  let sum = 0;
  for (let p = 0; p < passes; p++) {
    for (let i = 0; i < keys.length; i++) {
      const v = replica.get(keys[i]!);
      if (v !== undefined) sum += v;
    }
  }
  return sum;
}

function replicaHas(replica: ReplicatedCache<number>, keys: readonly string[], passes: number): number {
  let count = 0;
  for (let p = 0; p < passes; p++) {
    for (let i = 0; i < keys.length; i++) if (replica.has(keys[i]!)) count++;
  }
  return count;
}

/** Map.get plus the expiry check a live read does: isolates the cost of reading the clock per hit. */
function mapGetLive(map: Map<string, number>, keys: readonly string[], passes: number): number {
  let sum = 0;
  for (let p = 0; p < passes; p++) {
    for (let i = 0; i < keys.length; i++) {
      const v = map.get(keys[i]!);
      if (v !== undefined && blacklistExpireAtMs(v) > Date.now()) sum += v;
    }
  }
  return sum;
}

function dateNow(ops: number): number {
  let sum = 0;
  for (let i = 0; i < ops; i++) sum += Date.now() & 1;
  return sum;
}

async function bentoGet(bento: Bento, keys: readonly string[]): Promise<number> {
  let sum = 0;
  for (let i = 0; i < keys.length; i++) {
    const v = await bento.get<number | undefined>({ key: keys[i]! });
    if (v !== undefined && v !== null) sum += v;
  }
  return sum;
}

async function bentoHas(bento: Bento, keys: readonly string[]): Promise<number> {
  let count = 0;
  for (let i = 0; i < keys.length; i++) if (await bento.has({ key: keys[i]! })) count++;
  return count;
}

type Bento = Pick<BentoCache<Record<string, never>>, 'get' | 'has'>;

function bentoVersion(): string {
  const file = join(import.meta.dirname, '..', 'node_modules', 'bentocache', 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

interface Variant {
  name: string;
  ops: number;
  run(): number | Promise<number>;
  expect: number;
}

async function main(): Promise<void> {
  const t0 = nowNs();
  const value = toBlacklistValue(Date.now() / 1000 + 3600);
  const keys: string[] = [];
  // randomUUID() returns a cons string; jtis parsed from JSON or read from Redis are flat.
  for (let i = 0; i < N; i++) keys.push(freshCopy(randomUUID()));

  // Random access order, materialised as fresh string copies in that order.
  const order = new Uint32Array(N);
  for (let i = 0; i < N; i++) order[i] = i;
  for (let i = N - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const tmp = order[i]!;
    order[i] = order[j]!;
    order[j] = tmp;
  }
  const hits: string[] = Array.from(order, (i) => freshCopy(keys[i]!));
  const misses: string[] = [];
  for (let i = 0; i < N; i++) misses.push(freshCopy(randomUUID()));
  const bentoHits = hits.slice(0, BENTO_OPS);
  const bentoMisses = misses.slice(0, BENTO_OPS);

  // The ceiling: a plain Map with the same keys and values.
  const map = new Map<string, number>();
  for (const k of keys) map.set(k, value);

  // The replica, loaded from a MemorySource through its normal start().
  const source = new MemorySource<number>();
  for (const k of keys) source.entries.set(k, value);
  const replica = new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source,
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  if (replica.size !== N || replica.state !== 'ready') throw new Error(`replica not loaded: ${replica.size}`);
  // Diagnostic: the same replica with a clock that returns a cached time (no clock read per hit).
  let coarseNow = Date.now();
  const coarseTimer = setInterval(() => (coarseNow = Date.now()), 10);
  const coarseReplica = new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source,
    versionCheckIntervalMs: 0,
    clock: { ...systemClock, now: () => coarseNow },
  });
  await coarseReplica.start();
  source.entries.clear();

  // The baseline: bentocache's in-memory tier (serialized LRU, its default).
  const bento = new BentoCache({
    default: 'memory',
    stores: { memory: bentostore().useL1Layer(memoryDriver({ maxSize: '1gb', maxItems: N + 1000 })) },
  });
  const tBento = nowNs();
  for (const k of keys) await bento.set({ key: k, value, ttl: '1h' });
  const bentoLoadMs = elapsedMs(tBento);
  console.log(`setup ${fmt(elapsedMs(t0) / 1000)} s (bentocache load of ${N}: ${fmt(bentoLoadMs / 1000)} s)`);

  const passOps = PASSES * N;
  const variants: Variant[] = [
    { name: 'Map.get(hit)', ops: passOps, run: () => mapGet(map, hits, PASSES), expect: passOps * value },
    { name: 'Map.has(hit)', ops: passOps, run: () => mapHas(map, hits, PASSES), expect: passOps },
    { name: 'Map.has(miss)', ops: passOps, run: () => mapHas(map, misses, PASSES), expect: 0 },
    {
      name: 'replica.get(hit)',
      ops: passOps,
      run: () => replicaGet(replica, hits, PASSES),
      expect: passOps * value,
    },
    { name: 'replica.has(hit)', ops: passOps, run: () => replicaHas(replica, hits, PASSES), expect: passOps },
    { name: 'replica.has(miss)', ops: passOps, run: () => replicaHas(replica, misses, PASSES), expect: 0 },
    {
      name: 'Map.get+Date.now()',
      ops: passOps,
      run: () => mapGetLive(map, hits, PASSES),
      expect: passOps * value,
    },
    {
      name: 'replica/cached-clock.get(hit)',
      ops: passOps,
      run: () => replicaGet(coarseReplica, hits, PASSES),
      expect: passOps * value,
    },
    { name: 'Date.now()', ops: N, run: () => dateNow(N) * 0, expect: 0 },
    {
      name: 'bento.get(hit)',
      ops: BENTO_OPS,
      run: () => bentoGet(bento, bentoHits),
      expect: BENTO_OPS * value,
    },
    { name: 'bento.has(hit)', ops: BENTO_OPS, run: () => bentoHas(bento, bentoHits), expect: BENTO_OPS },
    { name: 'bento.has(miss)', ops: BENTO_OPS, run: () => bentoHas(bento, bentoMisses), expect: 0 },
  ];

  // Warm-up (JIT), then RUNS interleaved rounds so machine noise hits every variant alike.
  for (const v of variants) check(v.name, await v.run(), v.expect);
  const samples = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < RUNS; r++) {
    gc(1);
    for (const v of variants) {
      const start = nowNs();
      const result = await v.run();
      const ns = Number(nowNs() - start) / v.ops;
      check(v.name, result, v.expect);
      sink += result;
      samples.get(v.name)!.push(ns);
    }
  }
  const ns = (name: string): number => median(samples.get(name)!);
  for (const v of variants) {
    console.log(
      `${v.name.padEnd(30)} ${samples
        .get(v.name)!
        .map((x) => fmt(x).padStart(7))
        .join(' ')} ns/op`,
    );
  }

  const rows: Row[] = [];
  for (const [op, mapOp, bentoOp, headline] of [
    ['replica.get(hit)', 'Map.get(hit)', 'bento.get(hit)', `get, hit, ${fmtCount(N)} entries, random keys`],
    ['replica.has(hit)', 'Map.has(hit)', 'bento.has(hit)', undefined],
    ['replica.has(miss)', 'Map.has(miss)', 'bento.has(miss)', `has, miss, ${fmtCount(N)} entries`],
  ] as const) {
    rows.push(
      row(op, ns(op), 'ns/op', {
        ceiling: { label: mapOp, value: ns(mapOp) },
        baseline: { label: `await ${bentoOp}`, value: ns(bentoOp) },
        headline,
      }),
    );
  }
  rows.push(
    row('diag: Map.get + expiry check with Date.now()', ns('Map.get+Date.now()'), 'ns/op', {
      ceiling: { label: 'Map.get(hit)', value: ns('Map.get(hit)') },
    }),
    row('diag: replica.get(hit) with a cached clock', ns('replica/cached-clock.get(hit)'), 'ns/op', {
      ceiling: { label: 'Map.get(hit)', value: ns('Map.get(hit)') },
    }),
    row('diag: Date.now() alone, tight loop', ns('Date.now()'), 'ns/op'),
  );
  printRows(`read cost, ${N} entries, median of ${RUNS} runs`, rows);
  const notes = [
    `${N} uuid jti keys, random access order, fresh key strings; sync variants ${PASSES}x${N} lookups/run, bentocache ${BENTO_OPS}/run; median of ${RUNS} interleaved runs.`,
    `bentocache ${bentoVersion()} memory driver with default serialization (maxSize 1gb); its load of ${N} entries took ${fmt(bentoLoadMs / 1000)} s.`,
  ];
  writeResult('read', rows, notes);
  if (sink === -1) console.log('unreachable');

  clearInterval(coarseTimer);
  await coarseReplica.close();
  await replica.close();
  await bento.disconnect();
}

await main();
