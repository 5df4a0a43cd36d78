import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Connection } from 'rabbitmq-client';
import { createVerifier } from '../../src/auth/jwt/verifier.ts';
import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { CacheKey } from '../../src/services/cache-keys.ts';
import { parseCatalogCsv } from '../../src/catalog/csv.ts';
import { grantId } from '../../src/catalog/grant-id.ts';
import type { GrantMessage } from '../../src/catalog/grant.ts';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import { CatalogRepository } from '../../src/catalog/repository.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { buildCatalogApp } from '../../src/services/catalog/app.ts';
import { startCatalog } from '../../src/services/catalog/main.ts';
import type { UserCollection } from '../../src/services/catalog/user-collections.ts';
import { UserCollections } from '../../src/services/catalog/user-collections.ts';
import type { RunningService } from '../../src/services/service.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { TEST_JWT_SECRET } from '../support/authz-fleet.ts';
import type { TestDatabase } from '../support/env.ts';
import {
  DATABASE_URL,
  RABBITMQ_URL,
  REDIS_URL,
  redisClient,
  testDatabase,
  uniqueName,
} from '../support/env.ts';
import { claims, hs256 } from '../support/jwt-tokens.ts';
import { waitFor } from '../support/wait.ts';

const prefix = uniqueName('it.collections');
let db: TestDatabase;
let cache: CacheAside;
let replica: ReplicatedCache<Character>;
let app: FastifyInstance;
let characters: Character[];
let redis: Awaited<ReturnType<typeof redisClient>>;
const verifier = createVerifier({ issuer: 'cachecast', audience: 'cachecast', secret: TEST_JWT_SECRET });
/** A valid access token whose `sub` is `userId`, as auth issues them. */
const tokenFor = (userId: string): string => hs256(claims({ sub: userId }));
const bearer = (userId: string) => ({ authorization: `Bearer ${tokenFor(userId)}` });

before(async () => {
  db = await testDatabase();
  const parsed = parseCatalogCsv(await readFile(join(import.meta.dirname, '../../data/sample-catalog.csv')));
  assert.ok(parsed.ok);
  const repository = new CatalogRepository(db.pool, { topic: uniqueName('it.collections.topic') });
  await repository.replaceAll(parsed.rows);
  replica = new ReplicatedCache<Character>({
    dataset: catalogDataset,
    bus: new MemoryBus(new MemoryBroker()),
    source: catalogSource(db.pool),
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  characters = replica.values().sort((a, b) => a.code.localeCompare(b.code));
  cache = new CacheAside({ redisUrl: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 1000 });
  app = buildCatalogApp({
    replica,
    repository,
    adminToken: undefined,
    collections: new UserCollections(cache, db.pool, replica),
    verifier,
  });
  redis = await redisClient();
});
after(async () => {
  await app.close();
  await cache.close();
  await replica.close();
  for await (const keys of redis.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
    if (keys.length > 0) await redis.del(keys);
  }
  await redis.close();
  await db.drop();
});

async function grant(userId: string, character: Character, at: string): Promise<void> {
  await db.pool.query(
    'INSERT INTO character_grants (id, user_id, character_id, acquired_at) VALUES ($1, $2, $3, $4)',
    [grantId(userId, character.id), userId, character.id, at],
  );
}

/** The collection of `userId`, asked by its owner unless `headers` say otherwise. */
const get = (userId: string, headers: Record<string, string> = bearer(userId)) =>
  app.inject({ method: 'GET', url: `/api/v1/users/${encodeURIComponent(userId)}/characters`, headers });

describe('GET /api/v1/users/{user_id}/characters through the cache-aside service', () => {
  it("answers the user's collection: each Character with acquired_at, oldest first", async () => {
    const [a, b] = [characters[0]!, characters[1]!];
    await grant('u-shape', b, '2026-01-02T00:00:00Z');
    await grant('u-shape', a, '2026-01-01T00:00:00Z');
    const res = await get('u-shape');
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json(), {
      user_id: 'u-shape',
      characters: [
        { ...a, acquired_at: '2026-01-01T00:00:00.000Z' },
        { ...b, acquired_at: '2026-01-02T00:00:00.000Z' },
      ],
    });
    const none = await get('u-nobody');
    assert.equal(none.statusCode, 200);
    assert.deepEqual(none.json(), { user_id: 'u-nobody', characters: [] });
  });

  it('is a Redis hit the second time: the database is not asked', async () => {
    await grant('u-hit', characters[2]!, '2026-01-01T00:00:00Z');
    const first = await get('u-hit');
    await cache.settled();
    assert.ok(
      await redis.exists(`${prefix}:1:users:u-hit:characters`),
      'written back under the declared key',
    );
    const before = cache.stats();
    const query = db.pool.query.bind(db.pool);
    db.pool.query = () => Promise.reject(new Error('database must not be read'));
    try {
      const second = await get('u-hit');
      assert.equal(second.statusCode, 200);
      assert.deepEqual(second.json(), first.json());
    } finally {
      db.pool.query = query;
    }
    const stats = cache.stats();
    assert.equal(stats.redis_hits, before.redis_hits + 1);
    assert.equal(stats.fallbacks, before.fallbacks);
  });

  it('shows a new grant once the writer invalidated the key', async () => {
    await grant('u-new', characters[3]!, '2026-01-01T00:00:00Z');
    assert.equal((await get('u-new')).json<UserCollection>().characters.length, 1);
    await cache.settled();
    await grant('u-new', characters[4]!, '2026-01-02T00:00:00Z');
    assert.equal(
      (await get('u-new')).json<UserCollection>().characters.length,
      1,
      'cached: a grant without invalidation is not seen (that is what invalidate is for)',
    );
    assert.equal(await cache.invalidate(CacheKey.USER_CHARACTERS, { user_id: 'u-new' }), true);
    const after = (await get('u-new')).json<UserCollection>();
    assert.deepEqual(
      after.characters.map((c) => c.code),
      [characters[3]!.code, characters[4]!.code],
    );
  });

  it('refuses bad user ids with 400 invalid_user_id, and accepts any other id', async () => {
    for (const url of [
      '/api/v1/users//characters',
      `/api/v1/users/${'x'.repeat(201)}/characters`,
      '/api/v1/users/a%00b/characters',
      '/api/v1/users/a%0Ab/characters',
      '/api/v1/users/%20padded/characters',
      '/api/v1/users/padded%20/characters',
    ]) {
      const res = await app.inject({ method: 'GET', url, headers: bearer('user-1') });
      assert.equal(res.statusCode, 400, `${url}: ${res.body}`);
      assert.equal(res.json<{ error: string }>().error, 'invalid_user_id', url);
    }
    for (const id of ['user@example.com', 'a:b/c', 'x'.repeat(200), 'u-%41~!']) {
      const res = await get(id);
      assert.equal(res.statusCode, 200, `${id}: ${res.body}`);
      assert.equal(res.json<UserCollection>().user_id, id);
    }
    // A token's sub is visible ASCII (it becomes ext-authz's x-user-id header): no token owns these.
    for (const id of ['사용자-1', '🦊'.repeat(100)]) {
      const res = await get(id, bearer('user-1'));
      assert.equal(res.statusCode, 403, `${id}: ${res.body}`);
    }
  });

  it("answers only the collection's owner: 401 without a valid token, 403 for another user's", async () => {
    await grant('u-owner', characters[9]!, '2026-01-01T00:00:00Z');
    const own = await get('u-owner');
    assert.equal(own.statusCode, 200, own.body);
    assert.equal(own.json<UserCollection>().characters[0]?.code, characters[9]!.code);

    const other = await get('u-owner', bearer('u-intruder'));
    assert.equal(other.statusCode, 403, other.body);
    assert.deepEqual(other.json(), { error: 'forbidden', message: 'a collection is only for its owner' });

    const now = Math.floor(Date.now() / 1000);
    for (const [what, headers, error] of [
      ['no token', {}, 'missing_token'],
      [
        'another scheme',
        { authorization: `Basic ${Buffer.from('u-owner:x').toString('base64')}` },
        'invalid_token',
      ],
      [
        'a forged token',
        { authorization: `Bearer ${hs256(claims({ sub: 'u-owner' }), 'f'.repeat(40))}` },
        'invalid_token',
      ],
      [
        'an expired token',
        { authorization: `Bearer ${hs256(claims({ sub: 'u-owner', iat: now - 1200, exp: now - 600 }))}` },
        'token_expired',
      ],
      // What a proxy without ext-authz would pass on from the client: proves nothing.
      ['x-user-id alone', { 'x-user-id': 'u-owner' }, 'missing_token'],
      ['x-user-id and x-auth-jti alone', { 'x-user-id': 'u-owner', 'x-auth-jti': 'j-1' }, 'missing_token'],
      // Another user's valid token with the owner's id in x-user-id: the headers must agree with the token.
      [
        'x-user-id naming someone else than the token',
        { ...bearer('u-intruder'), 'x-user-id': 'u-owner' },
        'identity_mismatch',
      ],
      [
        'x-auth-jti naming another token',
        { ...bearer('u-owner'), 'x-auth-jti': 'another-jti' },
        'identity_mismatch',
      ],
    ] as const) {
      const res = await get('u-owner', headers);
      assert.equal(res.statusCode, 401, `${what}: ${res.body}`);
      assert.equal(res.json<{ error: string }>().error, error, what);
      assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"', what);
      assert.doesNotMatch(res.body, /acquired_at/, `${what}: no collection in the answer`);
    }

    // Behind ext-authz: x-user-id and x-auth-jti set from the same token agree with it.
    const token = tokenFor('u-owner');
    const jti = (verifier.verify(token) as { claims: { jti: string } }).claims.jti;
    const proxied = await get('u-owner', {
      authorization: `Bearer ${token}`,
      'x-user-id': 'u-owner',
      'x-auth-jti': jti,
    });
    assert.equal(proxied.statusCode, 200, proxied.body);
  });

  it('answers from PostgreSQL with Redis unreachable, and 503 only when both fail', async () => {
    const deadRedis = new CacheAside({
      redisUrl: 'redis://127.0.0.1:1/0',
      keyPrefix: prefix,
      commandTimeoutMs: 500,
    });
    const degraded = buildCatalogApp({
      replica,
      repository: new CatalogRepository(db.pool),
      adminToken: undefined,
      collections: new UserCollections(deadRedis, db.pool, replica),
      verifier,
    });
    try {
      await grant('u-degraded', characters[5]!, '2026-01-01T00:00:00Z');
      const res = await degraded.inject({
        method: 'GET',
        url: '/api/v1/users/u-degraded/characters',
        headers: bearer('u-degraded'),
      });
      assert.equal(res.statusCode, 200);
      assert.equal(res.json<UserCollection>().characters[0]?.code, characters[5]!.code);
      const query = db.pool.query.bind(db.pool);
      db.pool.query = () => Promise.reject(new Error('database down'));
      try {
        const down = await degraded.inject({
          method: 'GET',
          url: '/api/v1/users/u-degraded/characters',
          headers: bearer('u-degraded'),
        });
        assert.equal(down.statusCode, 503);
        assert.equal(down.json<{ error: string }>().error, 'collection_unavailable');
      } finally {
        db.pool.query = query;
      }
    } finally {
      await degraded.close();
      await deadRedis.close();
    }
  });
});

describe('the catalog service end to end: grants writer -> invalidation -> cache, /cache and /metrics', () => {
  const ADMIN = 'collections-admin-token-0123456789';
  let service: RunningService;
  let amqp: Connection;

  before(async () => {
    const url = new URL(DATABASE_URL);
    url.searchParams.set('options', `-c search_path=${db.schema}`);
    service = await startCatalog({
      DATABASE_URL: url.toString(),
      RABBITMQ_URL,
      REDIS_URL,
      PORT: '0',
      ADMIN_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'silent',
      ADMIN_TOKEN: ADMIN,
      JWT_SECRET: TEST_JWT_SECRET,
    });
    amqp = new Connection(RABBITMQ_URL);
  });
  after(async () => {
    await service.close();
    await amqp.close();
  });

  it('a grant from the match worker reaches the cached collection once the writer commits', async () => {
    const user = uniqueName('e2e-user');
    const collection = async (): Promise<UserCollection> => {
      const res = await fetch(`${service.endpoints.http}/api/v1/users/${user}/characters`, {
        headers: bearer(user),
      });
      assert.equal(res.status, 200);
      return (await res.json()) as UserCollection;
    };
    assert.deepEqual(await collection(), { user_id: user, characters: [] });
    // Cached now (an empty collection is a value): the next read is a Redis hit. A write-back
    // that missed its Redis deadline (a loaded machine) is not retried, so read again until one lands.
    await waitFor(async () => {
      assert.deepEqual(await collection(), { user_id: user, characters: [] });
      const stats = (await (await fetch(`${service.endpoints.admin}/cache`)).json()) as {
        write_backs: number;
      };
      return stats.write_backs >= 1;
    }, 'the empty collection written back');
    assert.deepEqual((await collection()).characters, []);

    const character = characters[6]!;
    const publisher = amqp.createPublisher({ confirm: true });
    const message: GrantMessage = {
      user_id: user,
      character_id: character.id,
      character_code: character.code,
      task_id: randomUUID(),
      granted_at: new Date().toISOString(),
    };
    await publisher.send(
      { routingKey: GRANTS_QUEUE, durable: true, contentType: 'application/json' },
      message,
    );
    await publisher.close();
    await waitFor(
      async () => (await collection()).characters.length === 1,
      'the granted character in the collection (the writer invalidated the key)',
      15_000,
    );
    const [got] = (await collection()).characters;
    assert.equal(got?.code, character.code);
    assert.equal(got?.acquired_at, message.granted_at);

    const stats = (await (await fetch(`${service.endpoints.admin}/cache`)).json()) as Record<string, unknown>;
    for (const field of [
      'is_open',
      'recent_fail_count',
      'failure_threshold',
      'failure_window_size',
      'timeout',
      'last_failure_time',
      'hits',
      'misses',
      'fallbacks',
    ]) {
      assert.ok(field in stats, `/cache has ${field}`);
    }
    assert.equal(stats.is_open, false);
    assert.equal(stats.failure_threshold, 10);
    assert.equal(stats.failure_window_size, 60);
    assert.equal(stats.timeout, 180);
    assert.ok((stats.hits as number) >= 1);
    assert.ok((stats.invalidations as number) >= 1);
    const metrics = await (await fetch(`${service.endpoints.admin}/metrics`)).text();
    assert.match(metrics, /cachecast_cache_hits_total\{tier="redis"\} [1-9]/);
    assert.match(metrics, /cachecast_cache_fallbacks_total [1-9]/);
    assert.match(metrics, /cachecast_cache_write_backs_total\{result="ok"\} [1-9]/);
    assert.match(metrics, /cachecast_cache_breaker_state\{state="closed"\} 1/);
    assert.match(metrics, /^cachecast_outbox_pending \d+$/m, 'the relay backlog is on the catalog metrics');
  });
  it('a cached collection shows an admin edit of a character at once, and drops a deleted one', async () => {
    const user = uniqueName('edit-user');
    const [kept, removed] = [characters[7]!, characters[8]!];
    await grant(user, kept, '2026-01-01T00:00:00Z');
    await grant(user, removed, '2026-01-02T00:00:00Z');
    const read = async (): Promise<UserCollection> =>
      (await (
        await fetch(`${service.endpoints.http}/api/v1/users/${user}/characters`, { headers: bearer(user) })
      ).json()) as UserCollection;
    const cacheStats = async () =>
      (await (await fetch(`${service.endpoints.admin}/cache`)).json()) as {
        fallbacks: number;
        write_backs: number;
      };
    const writeBacks = (await cacheStats()).write_backs;
    assert.deepEqual(
      (await read()).characters.map((c) => c.code),
      [kept.code, removed.code],
    );
    await waitFor(async () => (await cacheStats()).write_backs > writeBacks, 'the grants written back');
    const fallbacksBefore = (await cacheStats()).fallbacks;

    const admin = (method: string, code: string, body?: unknown) =>
      fetch(`${service.endpoints.http}/admin/characters/${encodeURIComponent(code)}`, {
        method,
        headers: {
          authorization: `Bearer ${ADMIN}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const edited = await admin('PUT', kept.code, {
      name: 'Renamed while cached',
      match_label: kept.match_label,
      type_label: kept.type_label,
      dialog: kept.dialog,
      is_default: kept.is_default,
    });
    assert.equal(edited.status, 200, await edited.text());
    await waitFor(
      async () => (await read()).characters[0]?.name === 'Renamed while cached',
      'the new name in the cached collection (no TTL wait)',
      5000,
    );
    assert.equal((await admin('DELETE', removed.code)).status, 204);
    await waitFor(
      async () => (await read()).characters.map((c) => c.code).join() === kept.code,
      'the deleted character gone from the cached collection',
      5000,
    );
    const after = await cacheStats();
    assert.equal(
      after.fallbacks,
      fallbacksBefore,
      'served from the cache throughout: the grants were not re-read',
    );
  });
});
