// Cache-aside read latency (seed 003) for a user's collection
// (`GET /api/v1/users/{user_id}/characters`): each path a read can take,
// against the seed's "before", a PostgreSQL query per read.
//
// - memory-tier hit: a key declared with localTtlMs (parse of the held JSON).
// - Redis hit: CacheKey.USER_CHARACTERS as the catalog service reads it.
// - miss: the key deleted beforehand (untimed): Redis GET (nil), the
//   PostgreSQL query, the write-back started off the response path (waited
//   for, untimed, before the next read).
// - breaker open: Redis cut (TCP proxy refusing), the breaker tripped; reads
//   skip Redis and go to PostgreSQL.
// - diag: Redis cut with the breaker held closed (threshold out of reach):
//   what a read costs before the breaker opens (a refused connection + the query).
// - baseline: the same SQL through pg per read (what the seed did before).
// - ceilings: Map.get + JSON.parse (memory tier), GET + JSON.parse on a plain
//   node-redis client (Redis hit), the bare query (miss, breaker open).
//
// Every read is timed one by one (hrtime), sequentially, in ROUNDS interleaved
// rounds so that machine noise hits every variant alike.
import { CacheAside } from '../src/cache-aside/cache-aside.ts';
import { defineCacheKeys } from '../src/cache-aside/cache-key.ts';
import { CacheKey } from '../src/services/cache-keys.ts';
import { grantId } from '../src/catalog/grant-id.ts';
import type { Character } from '../src/datasets/catalog.ts';
import {
  joinGrants,
  loadUserCharacters,
  loadUserGrants,
  UserCollections,
} from '../src/services/catalog/user-collections.ts';
import type { GrantRef } from '../src/services/catalog/user-collections.ts';
import { createClient } from 'redis';
import { testDatabase, uniqueName } from '../test/support/env.ts';
import { TcpProxy } from '../test/support/tcp-proxy.ts';
import type { Row } from './lib.ts';
import { fmt, nowNs, percentile, printRows, REDIS_BENCH_URL, row, writeResult } from './lib.ts';

const USERS = 2000;
const GRANTS_PER_USER = 5;
const CHARACTERS = 13;
const ROUNDS = 5;
const PER_ROUND = { memory: 4000, redis: 1000, miss: 300, open: 300, closedDown: 100, pg: 300 };
const COMMAND_TIMEOUT_MS = 100;

const BenchKey = defineCacheKeys({
  // The same collection, with an in-process tier, to measure that tier.
  USER_CHARACTERS_LOCAL: {
    template: 'bench:users:{user_id}:characters',
    ttlMs: 3_600_000,
    localTtlMs: 3_600_000,
  },
});

let sink = 0;

function pick(): string {
  return `user-${Math.floor(Math.random() * USERS)}`;
}

async function timeEach(
  n: number,
  read: (userId: string) => Promise<unknown>,
  before?: (userId: string) => Promise<void>,
) {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = pick();
    if (before) await before(id);
    const t = nowNs();
    const value = await read(id);
    out.push(Number(nowNs() - t) / 1000);
    if (value) sink++;
  }
  return out;
}

async function main(): Promise<void> {
  const db = await testDatabase();
  const { pool } = db;
  const prefix = uniqueName('bench.cache');
  const redisUrl = new URL(REDIS_BENCH_URL);
  const proxy = await new TcpProxy(redisUrl.hostname, Number(redisUrl.port || 6379)).start();
  const plain = createClient({ url: REDIS_BENCH_URL });
  await plain.connect();
  const caches: CacheAside[] = [];
  try {
    // ---- data: 13 characters, USERS users with GRANTS_PER_USER grants each
    const { rows: characters } = await pool.query<{ id: string }>(
      `INSERT INTO characters (id, code, name, match_label, type_label, dialog)
       SELECT gen_random_uuid(), 'eco-' || i, 'Character ' || i, 'label-' || i, 'recyclable',
              'Dialog line for character ' || i || ', about as long as the sample catalog''s.'
       FROM generate_series(1, $1) AS i RETURNING id::text AS id`,
      [CHARACTERS],
    );
    const grants: Array<[string, string, string]> = [];
    for (let u = 0; u < USERS; u++) {
      for (let g = 0; g < GRANTS_PER_USER; g++) {
        const character = characters[(u + g) % characters.length]!.id;
        grants.push([`user-${u}`, character, new Date(Date.UTC(2026, 0, 1 + g)).toISOString()]);
      }
    }
    await pool.query(
      `INSERT INTO character_grants (id, user_id, character_id, acquired_at)
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])`,
      [
        grants.map(([u, c]) => grantId(u, c)),
        grants.map(([u]) => u),
        grants.map(([, c]) => c),
        grants.map(([, , at]) => at),
      ],
    );
    await pool.query('ANALYZE character_grants; ANALYZE characters');
    // The service joins cached grants with its catalog replica; a Map stands in for it here.
    const catalog = new Map<string, Character>();
    const { rows: full } = await pool.query<Character>(
      'SELECT id::text AS id, code, name, match_label, type_label, dialog, is_default FROM characters',
    );
    for (const c of full) catalog.set(c.id, c);
    const sample = await loadUserCharacters(pool, 'user-1');
    const valueBytes = Buffer.byteLength(JSON.stringify(sample));
    const cachedBytes = Buffer.byteLength(JSON.stringify(await loadUserGrants(pool, 'user-1')));

    // ---- the caches
    const make = (url: string, breaker?: { failureThreshold: number }) => {
      const cache = new CacheAside({
        redisUrl: url,
        keyPrefix: prefix,
        commandTimeoutMs: COMMAND_TIMEOUT_MS,
        breaker,
      });
      caches.push(cache);
      return cache;
    };
    const cache = make(REDIS_BENCH_URL);
    const collections = new UserCollections(cache, pool, catalog);
    const localGrants = cache.wrap(
      BenchKey.USER_CHARACTERS_LOCAL,
      (userId: string) => ({ user_id: userId }),
      (userId: string) => loadUserGrants(pool, userId),
    );
    const local = async (userId: string) => ({
      user_id: userId,
      characters: joinGrants(await localGrants(userId), catalog),
    });
    const proxied = `redis://127.0.0.1:${proxy.port}${redisUrl.pathname}`;
    const outage = make(proxied);
    const outageCollections = new UserCollections(outage, pool, catalog);
    const closedDown = make(proxied, { failureThreshold: 100_000 });
    const closedDownCollections = new UserCollections(closedDown, pool, catalog);

    // ---- the ceilings and the baseline
    // Ceilings do the same work as the service (parse the grants, join with the
    // catalog) without the cache-aside machinery around it.
    const held = new Map<string, string>();
    for (let u = 0; u < USERS; u++)
      held.set(`user-${u}`, JSON.stringify(await loadUserGrants(pool, `user-${u}`)));
    const joined = (id: string, json: string) => ({
      user_id: id,
      characters: joinGrants(JSON.parse(json) as GrantRef[], catalog),
    });
    const mapParse = (id: string) => Promise.resolve(joined(id, held.get(id)!));
    const redisKey = (id: string) => `${prefix}:${CacheKey.USER_CHARACTERS.version}:users:${id}:characters`;
    const plainGet = async (id: string) => joined(id, (await plain.get(redisKey(id)))!);
    const pgRead = async (id: string) => ({ user_id: id, characters: await loadUserCharacters(pool, id) });
    const grantsQuery = async (id: string) => ({
      user_id: id,
      characters: joinGrants(await loadUserGrants(pool, id), catalog),
    });

    // ---- warm: every user in Redis and in the in-process tier; JIT and pools warmed
    for (let u = 0; u < USERS; u++) {
      await collections.get(`user-${u}`);
      await local(`user-${u}`);
    }
    await cache.settled();
    for (let u = 0; u < 500; u++) {
      await pgRead(pick());
      await grantsQuery(pick());
      await plainGet(pick());
    }

    // ---- the outage: Redis cut, the breaker tripped
    proxy.cut();
    for (let i = 0; !outage.stats().is_open; i++) {
      await outageCollections.get(pick());
      await outage.settled();
      if (i > 100) throw new Error('the breaker did not open');
    }
    const missBefore = (id: string) =>
      cache.invalidate(CacheKey.USER_CHARACTERS, { user_id: id }).then(() => undefined);

    const samples: Record<string, number[]> = {
      memory: [],
      mapParse: [],
      redis: [],
      plainGet: [],
      miss: [],
      open: [],
      closedDown: [],
      pg: [],
      grantsQuery: [],
    };
    const started = Date.now();
    for (let r = 0; r < ROUNDS; r++) {
      samples.memory!.push(...(await timeEach(PER_ROUND.memory, local)));
      samples.mapParse!.push(...(await timeEach(PER_ROUND.memory, mapParse)));
      samples.redis!.push(...(await timeEach(PER_ROUND.redis, (id) => collections.get(id))));
      samples.plainGet!.push(...(await timeEach(PER_ROUND.redis, plainGet)));
      samples.miss!.push(
        ...(await timeEach(PER_ROUND.miss, (id) => collections.get(id), missBefore).then(async (t) => {
          await cache.settled();
          return t;
        })),
      );
      samples.open!.push(...(await timeEach(PER_ROUND.open, (id) => outageCollections.get(id))));
      samples.closedDown!.push(
        ...(await timeEach(PER_ROUND.closedDown, (id) => closedDownCollections.get(id))),
      );
      await closedDown.settled();
      samples.pg!.push(...(await timeEach(PER_ROUND.pg, pgRead)));
      samples.grantsQuery!.push(...(await timeEach(PER_ROUND.pg, grantsQuery)));
    }
    const seconds = (Date.now() - started) / 1000;

    // Checks: each variant did what it claims.
    const s = cache.stats();
    if (s.memory_hits < ROUNDS * PER_ROUND.memory) throw new Error(`memory hits: ${s.memory_hits}`);
    if (outage.stats().redis_skipped < ROUNDS * PER_ROUND.open) throw new Error('outage reads reached Redis');
    if (!outage.stats().is_open) throw new Error('the breaker closed during the run');
    if (closedDown.stats().is_open) throw new Error('the held-closed breaker opened');

    const p = (name: string, q: number) => percentile(samples[name]!, q);
    const rows: Row[] = [];
    const variants: Array<[string, string, [string, string] | undefined]> = [
      ['memory', 'memory-tier hit', ['mapParse', 'Map.get + JSON.parse + join']],
      ['redis', 'Redis hit', ['plainGet', 'plain node-redis GET + JSON.parse + join']],
      [
        'miss',
        'miss -> PostgreSQL (+ write-back off the path)',
        ['grantsQuery', 'grants query + join alone'],
      ],
      ['open', 'Redis down, breaker open -> PostgreSQL', ['grantsQuery', 'grants query + join alone']],
    ];
    for (const q of [50, 99]) {
      for (const [name, label, ceiling] of variants) {
        rows.push(
          row(`${label} p${q}`, p(name, q), 'us', {
            baseline: { label: `pg query per read (seed before) p${q}`, value: p('pg', q) },
            ...(ceiling ? { ceiling: { label: `${ceiling[1]} p${q}`, value: p(ceiling[0], q) } } : {}),
            headline:
              q === 50 && name !== 'open' ? `user collection read, ${label.split(' (')[0]} p50` : undefined,
          }),
        );
      }
    }
    rows.push(
      row('diag: Redis down, breaker still closed p50', p('closedDown', 50), 'us', {
        baseline: { label: 'pg query per read p50', value: p('pg', 50) },
        note: `p99 ${fmt(p('closedDown', 99))} us: a refused connection + the query, until the breaker opens`,
      }),
      row('pg query per read (seed before) p50', p('pg', 50), 'us', { note: `p99 ${fmt(p('pg', 99))} us` }),
    );
    printRows('cache-aside read latency vs a PostgreSQL query per read (seed 003 "before")', rows);
    const notes = [
      `${USERS} users x ${GRANTS_PER_USER} grants over ${CHARACTERS} characters; a collection is ~${valueBytes} bytes of JSON, of which the cache holds the grants, ~${cachedBytes} bytes. PostgreSQL and Redis on localhost (the baseline's best case).`,
      `Reads timed one by one, sequentially, ${ROUNDS} interleaved rounds: ${Object.entries(PER_ROUND)
        .map(([k, n]) => `${k} ${n * ROUNDS}`)
        .join(', ')} reads; random users. Took ${fmt(seconds)} s.`,
      `Misses: the key deleted (untimed) before each read; its write-back awaited (untimed) after the round. Command timeout ${COMMAND_TIMEOUT_MS} ms; the outage is a TCP proxy refusing connections (breaker tripped first, then every read skips Redis).`,
      'Every cache read returns a fresh copy parsed from the stored JSON, whichever tier answered (the memory tier holds JSON text, not objects).',
      "The cache holds a user's grants; character details are joined from the catalog (the service's replica; a Map here) on every read. The baseline is the seed's query joining grants with characters; the ceilings parse the same grants and do the same join with no cache-aside around them.",
    ];
    writeResult('cache-aside', rows, notes);
    if (sink === -1) console.log('unreachable');
  } finally {
    for (const c of caches) await c.close();
    for await (const keys of plain.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
      if (keys.length > 0) await plain.del(keys);
    }
    await plain.close();
    await proxy.close();
    await db.drop();
  }
}

await main();
