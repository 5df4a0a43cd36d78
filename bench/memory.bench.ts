// Heap bytes per entry at 1M blacklist entries: the replica (loaded through
// start()) against a plain Map<string, number> of unix-second expiries, the
// structure a hand-written cache would hold. Keys are 36-char uuid jtis and are
// counted in every figure (they are most of the bytes). Optionally: what Redis
// itself spends per `blacklist:<jti>` key with a TTL.
import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import { blacklistDataset, toBlacklistValue } from '../src/datasets/blacklist.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { MemorySource } from '../src/sources/memory-source.ts';
import type { Row } from './lib.ts';
import { fmt, fmtCount, freshCopy, gc, printRows, REDIS_BENCH_URL, row, writeResult } from './lib.ts';

const N = Number(process.env.BENCH_MEMORY_ENTRIES ?? 1_000_000);
const REDIS_KEYS = 100_000;

function heapUsed(): number {
  gc();
  return process.memoryUsage().heapUsed;
}

/** A flat 36-char jti, as JSON.parse or a Redis reply would give (randomUUID() returns a cons string). */
function jti(): string {
  return freshCopy(randomUUID());
}

/** Expiries spread over the next hour, in unix seconds. */
function expirySeconds(i: number, nowS: number): number {
  return nowS + 600 + (i % 3000);
}

/**
 * Measured from before the source data exists: the replica shares the key
 * strings with the source's map, so a "before" taken after building the
 * source would already hold every key and the delta would be ~0. Once the
 * source's map is cleared the replica is their only holder.
 */
async function replicaBytes(nowS: number): Promise<number> {
  const before = heapUsed();
  const source = new MemorySource<number>();
  for (let i = 0; i < N; i++) source.entries.set(jti(), toBlacklistValue(expirySeconds(i, nowS)));
  const replica = new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source,
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  if (replica.size !== N) throw new Error(`replica holds ${replica.size}`);
  // The keys now live on in the replica only: they count as its bytes.
  source.entries.clear();
  const after = heapUsed();
  await replica.close();
  return (after - before) / N;
}

/** A Map of N fresh keys; counts the keys, the table and the values. */
function mapBytes(value: (i: number) => number): number {
  const before = heapUsed();
  let map: Map<string, number> | undefined = new Map();
  for (let i = 0; i < N; i++) map.set(jti(), value(i));
  const after = heapUsed();
  if (map.size !== N) throw new Error('map size');
  map = undefined;
  return (after - before) / N;
}

async function redisBytes(): Promise<number | undefined> {
  const client = createClient({ url: REDIS_BENCH_URL });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    console.log(`redis unavailable, skipping its figure: ${String(err)}`);
    return undefined;
  }
  try {
    await client.flushDb();
    const usedMemory = async (): Promise<number> => {
      const info = await client.info('memory');
      const match = /^used_memory:(\d+)/m.exec(info);
      if (!match) throw new Error('no used_memory in INFO');
      return Number(match[1]);
    };
    const before = await usedMemory();
    for (let i = 0; i < REDIS_KEYS; i += 10_000) {
      const batch: Array<Promise<unknown>> = [];
      for (let j = i; j < Math.min(REDIS_KEYS, i + 10_000); j++) {
        batch.push(client.setEx(`blacklist:${randomUUID()}`, 600 + (j % 3000), '1'));
      }
      await Promise.all(batch);
    }
    const after = await usedMemory();
    return (after - before) / REDIS_KEYS;
  } finally {
    await client.flushDb();
    await client.close();
  }
}

async function main(): Promise<void> {
  const nowS = Math.floor(Date.now() / 1000);
  // Unused warm-up: the first big allocation also grows V8's heap bookkeeping.
  mapBytes((i) => i);

  const replica = await replicaBytes(nowS);
  const mapUnix = mapBytes((i) => expirySeconds(i, nowS));
  const mapOffset = mapBytes((i) => toBlacklistValue(expirySeconds(i, nowS)));
  const mapMs = mapBytes((i) => expirySeconds(i, nowS) * 1000);
  const redis = await redisBytes();

  // The replica is a Map plus bookkeeping: a plain Map is the floor it can reach.
  const ceiling = { label: 'Map<string, unix s>', value: mapUnix };
  const rows: Row[] = [
    row('replica heap per entry', replica, 'B/entry', {
      ceiling,
      ...(redis === undefined
        ? {}
        : { baseline: { label: 'Redis used_memory per blacklist:<jti> key with TTL', value: redis } }),
      headline: `heap per blacklist entry, ${fmtCount(N)} entries`,
    }),
    row('Map<string, offset-from-2024 s> (the replica encoding)', mapOffset, 'B/entry', { ceiling }),
    row('Map<string, epoch ms> (a HeapNumber per value)', mapMs, 'B/entry', { ceiling }),
  ];
  if (redis !== undefined) {
    rows.push(
      row(`Redis used_memory per blacklist:<jti> key with TTL (${REDIS_KEYS} keys)`, redis, 'B/key', {
        note: `replica/redis = x${fmt(replica / redis)}`,
      }),
    );
  }
  printRows(`memory, ${N} blacklist entries (36-char uuid jti keys)`, rows);
  console.log(`replica total for ${N} entries: ${fmt((replica * N) / 2 ** 20)} MiB`);
  const variables = process.config.variables as Record<string, unknown>;
  const pointerCompression = Boolean(variables.v8_enable_pointer_compression);
  const smiMax = pointerCompression ? 2 ** 30 - 1 : 2 ** 31 - 1;
  const smiNote = `node ${process.version} ${process.arch}, pointer compression ${pointerCompression ? 'on' : 'off'}: Smis reach ${smiMax}, so unix seconds ${nowS + 3600 <= smiMax ? 'fit' : 'do not fit'} in a Smi on this build.`;
  console.log(smiNote);
  writeResult('memory', rows, [
    `heapUsed after forced GC, before/after loading ${N} entries; the 36-char keys are counted in every figure.`,
    smiNote,
  ]);
}

await main();
