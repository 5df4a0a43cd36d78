// Bootstrap: time until a replica is ready with 1M `blacklist:*` keys (with
// TTLs) in Redis, loading through blacklistSource (SCAN, each step's expiries in one script call).
//
// Baseline: the seed's way, KEYS <pattern> then a TTL per key, done as well as
// this client allows (all TTLs pipelined, 8 batches of 10k in flight) into a
// Map. Ceiling: a bare SCAN loop that reads the keys only (no TTLs, no Map).
// Each variant runs twice, alternating, and keeps its best time.
//
// Uses Redis DB 15 only (REDIS_BENCH_URL), flushed before and after.
import { createClient } from 'redis';
import { MemoryBroker, MemoryBus } from '../src/bus/memory-bus.ts';
import { blacklistDataset, toBlacklistValue } from '../src/datasets/blacklist.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import { blacklistKeys } from '../src/datasets/blacklist.ts';
import { blacklistSource } from '../src/sources/blacklist-source.ts';
import type { RedisClient } from '../src/redis/client.ts';
import type { Row } from './lib.ts';
import {
  bareScan,
  elapsedMs,
  fmt,
  fmtCount,
  gc,
  loadExpiringKeys,
  nowNs,
  printRows,
  REDIS_BENCH_URL,
  redisCpuMs,
  row,
  writeResult,
} from './lib.ts';

const N = Number(process.env.BENCH_BOOTSTRAP_KEYS ?? 1_000_000);
const PREFIX = 'bench:blacklist:';
const VERSION_KEY = 'bench:version';
const SCAN_COUNTS = [1000, 5000] as const;
const ROUNDS = 2;
/** CPU spent by this process and by Redis during the fastest replica.start() per scanCount: where the time goes. */
const replicaCpu = new Map<number, { wallMs: number; nodeMs: number; redisMs: number }>();

async function load(client: RedisClient): Promise<void> {
  await loadExpiringKeys(client, PREFIX, N);
  await client.set(VERSION_KEY, '42');
}

async function replicaStart(client: RedisClient, scanCount: number): Promise<number> {
  const replica = new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source: blacklistSource(client, {
      keys: { ...blacklistKeys('bench'), prefix: PREFIX, versionKey: VERSION_KEY },
      scanCount,
    }),
    versionCheckIntervalMs: 0,
  });
  const redisCpu = await redisCpuMs(client);
  const cpu = process.cpuUsage();
  const start = nowNs();
  await replica.start();
  const ms = elapsedMs(start);
  const used = process.cpuUsage(cpu);
  const prev = replicaCpu.get(scanCount);
  if (!prev || ms < prev.wallMs) {
    replicaCpu.set(scanCount, {
      wallMs: ms,
      nodeMs: (used.user + used.system) / 1000,
      redisMs: (await redisCpuMs(client)) - redisCpu,
    });
  }
  if (replica.size !== N || replica.version !== 42) {
    throw new Error(`replica loaded ${replica.size} entries at version ${replica.version}`);
  }
  await replica.close();
  return ms;
}

/** The seed's approach: KEYS, then one TTL per key (pipelined: 8 batches of 10k in flight). */
async function keysThenTtl(client: RedisClient): Promise<number> {
  const start = nowNs();
  const keys = await client.keys(`${PREFIX}*`);
  const map = new Map<string, number>();
  const nowS = Date.now() / 1000;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < keys.length) {
        const batch = keys.slice(next, (next = Math.min(keys.length, next + 10_000)));
        const ttls = await Promise.all(batch.map((key) => client.ttl(key)));
        for (let i = 0; i < batch.length; i++) {
          const ttl = ttls[i]!;
          if (ttl === -2) continue;
          map.set(batch[i]!.slice(PREFIX.length), toBlacklistValue(ttl === -1 ? Infinity : nowS + ttl));
        }
      }
    }),
  );
  const ms = elapsedMs(start);
  if (map.size !== N) throw new Error(`KEYS+TTL loaded ${map.size}`);
  return ms;
}

/** The floor for any SCAN-based load: walk the keyspace, read nothing else. */
async function bareScanMs(client: RedisClient, count: number): Promise<number> {
  const { ms, seen } = await bareScan(client, PREFIX, count);
  if (seen < N) throw new Error(`SCAN saw ${seen}`);
  return ms;
}

async function main(): Promise<void> {
  const client: RedisClient = createClient({ url: REDIS_BENCH_URL });
  client.on('error', () => undefined);
  await client.connect();
  const best = new Map<string, number>();
  const record = (name: string, ms: number): void => {
    console.log(`${name.padEnd(28)} ${fmt(ms / 1000)} s`);
    best.set(name, Math.min(best.get(name) ?? Infinity, ms));
  };
  try {
    await client.flushDb();
    const t = nowNs();
    await load(client);
    console.log(`loaded ${N} keys in ${fmt(elapsedMs(t) / 1000)} s; dbsize ${await client.dbSize()}`);

    for (let round = 0; round < ROUNDS; round++) {
      for (const count of SCAN_COUNTS) {
        gc(1);
        record(`replica scanCount=${count}`, await replicaStart(client, count));
      }
      gc(1);
      record('KEYS + pipelined TTL', await keysThenTtl(client));
      for (const count of SCAN_COUNTS) record(`bare SCAN COUNT ${count}`, await bareScanMs(client, count));
    }
  } finally {
    await client.flushDb();
    await client.close();
  }

  const [bestCount, replicaMs] = SCAN_COUNTS.map(
    (c) => [c, best.get(`replica scanCount=${c}`)!] as const,
  ).sort((a, b) => a[1] - b[1])[0]!;
  const [scanCount, scanMs] = SCAN_COUNTS.map((c) => [c, best.get(`bare SCAN COUNT ${c}`)!] as const).sort(
    (a, b) => a[1] - b[1],
  )[0]!;
  const keysMs = best.get('KEYS + pipelined TTL')!;
  const other = SCAN_COUNTS.find((c) => c !== bestCount)!;
  const cpu = replicaCpu.get(bestCount)!;
  const rows: Row[] = [
    row(`time to ready, ${N} keys (replica.start, best scanCount=${bestCount})`, replicaMs / 1000, 's', {
      baseline: { label: 'KEYS + pipelined TTL', value: keysMs / 1000 },
      ceiling: { label: `bare SCAN COUNT ${scanCount}`, value: scanMs / 1000 },
      headline: `time to ready, ${fmtCount(N)} blacklist keys in Redis`,
      note:
        `during it node used ${fmt(cpu.nodeMs / 1000)} s CPU, redis ${fmt(cpu.redisMs / 1000)} s; ` +
        `scanCount=${other}: ${fmt(best.get(`replica scanCount=${other}`)! / 1000)} s`,
    }),
  ];
  printRows(`bootstrap from Redis, ${N} keys, best of ${ROUNDS}`, rows);
  writeResult('bootstrap', rows, [
    `${N} keys ${PREFIX}<uuid> with EX 600-3600 s in Redis DB 15; best of ${ROUNDS} alternating rounds per variant.`,
    'Baseline reads TTLs in pipelines (8 batches of 10k in flight), which is as fast as KEYS+TTL gets; KEYS itself blocks Redis for its whole run.',
  ]);
}

await main();
