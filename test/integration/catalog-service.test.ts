import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { parseCatalogCsv } from '../../src/catalog/csv.ts';
import { CatalogRepository } from '../../src/catalog/repository.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { buildCatalogApp } from '../../src/services/catalog/app.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { bigCatalogCsv } from '../support/big-csv.ts';
import { catalogFixture } from '../support/catalog-fixture.ts';
import { rabbitProxy, testBus } from '../support/rabbit.ts';
import { waitFor } from '../support/wait.ts';

const fx = catalogFixture('it.catalog-api');
const TOKEN = 'test-admin-token-0123456789';
const auth = { authorization: `Bearer ${TOKEN}` };
let app: FastifyInstance;
let replica: ReplicatedCache<Character>;
let repository: CatalogRepository;
const sampleCsv = await readFile(join(import.meta.dirname, '../../data/sample-catalog.csv'));

before(async () => {
  await fx.ready();
  repository = new CatalogRepository(fx.db.pool, { topic: fx.topic });
  const parsed = parseCatalogCsv(sampleCsv);
  assert.ok(parsed.ok, 'the sample catalog is valid');
  await repository.replaceAll(parsed.rows);
  const bus = await testBus();
  replica = new ReplicatedCache<Character>({
    dataset: fx.dataset,
    bus,
    source: catalogSource(fx.db.pool),
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  app = buildCatalogApp({ replica, repository, adminToken: TOKEN, maxCsvBytes: 4096 });
  fx.defer(async () => {
    await app.close();
    await replica.close();
    await bus.close();
  });
});

const current = async (): Promise<number> => catalogSource(fx.db.pool).version();
const synced = async (): Promise<void> => {
  const target = await current();
  await waitFor(() => replica.version === target, `replica at version ${target}`);
};

describe('catalog API: reads from the replica', () => {
  it('serves the catalog, the default and matches without touching the database', async () => {
    await fx.startRelay();
    const catalog = await app.inject({ method: 'GET', url: '/api/v1/characters/catalog' });
    assert.equal(catalog.statusCode, 200);
    const characters = catalog.json<Character[]>();
    assert.equal(characters.length, 13);
    assert.deepEqual(
      characters.map((c) => c.code),
      [...characters.map((c) => c.code)].sort(),
    );
    const fallback = await app.inject({ method: 'GET', url: '/api/v1/characters/default' });
    assert.equal(fallback.statusCode, 200);
    assert.equal(fallback.json<Character>().is_default, true);
    // The database is not on the read path: reads still work with the pool's queries failing.
    const query = fx.db.pool.query.bind(fx.db.pool);
    fx.db.pool.query = () => Promise.reject(new Error('database must not be read'));
    try {
      const match = await app.inject({
        method: 'POST',
        url: '/api/v1/characters/match',
        payload: { major_category: 'recyclable', middle_category: 'plastic', minor_category: 'bottle' },
      });
      assert.equal(match.statusCode, 200);
      assert.equal(match.json<{ character: Character }>().character.match_label, 'plastic');
      const none = await app.inject({
        method: 'POST',
        url: '/api/v1/characters/match',
        payload: { minor_category: 'x' },
      });
      assert.deepEqual(none.json(), { character: null });
    } finally {
      fx.db.pool.query = query;
    }
  });

  it('refuses malformed match bodies with stable codes', async () => {
    const cases: Array<[string, string | object, string, number]> = [
      ['application/json', '{"middle_category":', 'invalid_json', 400],
      ['application/json', { middle_category: 5 }, 'invalid_body', 400],
      ['application/json', [1, 2], 'invalid_body', 400],
      ['text/xml', '<a/>', 'unsupported_media_type', 415],
      ['application/json', { middle_category: 'x'.repeat(70_000) }, 'body_too_large', 413],
    ];
    for (const [type, payload, code, status] of cases) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/characters/match',
        headers: { 'content-type': type },
        payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
      });
      assert.equal(res.statusCode, status, `${code}: ${res.body}`);
      assert.equal(res.json<{ error: string }>().error, code);
    }
    assert.equal(
      (await app.inject({ method: 'GET', url: '/nope' })).json<{ error: string }>().error,
      'not_found',
    );
  });
});

describe('catalog admin API', () => {
  it('refuses every call without the right bearer token, in constant time', async () => {
    const disabled = buildCatalogApp({ replica, repository, adminToken: undefined });
    const off = await disabled.inject({
      method: 'DELETE',
      url: '/admin/characters/eco-plastic',
      headers: auth,
    });
    assert.equal(off.statusCode, 403);
    assert.equal(off.json<{ error: string }>().error, 'admin_disabled');
    await disabled.close();
    for (const authorization of [undefined, 'Bearer wrong', `Basic ${TOKEN}`, `Bearer ${TOKEN}x`, TOKEN]) {
      const res = await app.inject({
        method: 'PUT',
        url: '/admin/characters/new',
        headers: authorization ? { authorization } : {},
        payload: { name: 'n', match_label: 'm' },
      });
      assert.equal(res.statusCode, 401, String(authorization));
    }
  });

  it('upserts and deletes through the outbox; every replica follows', async () => {
    const created = await app.inject({
      method: 'PUT',
      url: '/admin/characters/eco-tire',
      headers: auth,
      payload: { name: 'Tirey', match_label: 'tire', type_label: 'bulky', dialog: 'Roll on!' },
    });
    assert.equal(created.statusCode, 201, created.body);
    const { character } = created.json<{ character: Character }>();
    await synced();
    assert.deepEqual(replica.get(character.id), character);
    const updated = await app.inject({
      method: 'PUT',
      url: '/admin/characters/eco-tire',
      headers: auth,
      payload: { name: 'Tirey II', match_label: 'rubber' },
    });
    assert.equal(updated.statusCode, 200);
    assert.equal(updated.json<{ character: Character }>().character.id, character.id, 'same id');
    await synced();
    assert.equal(replica.findOne('match_label', 'tire'), undefined);
    assert.equal(replica.findOne('match_label', 'rubber')?.name, 'Tirey II');
    assert.equal(replica.get(character.id)?.dialog, null);
    const deleted = await app.inject({ method: 'DELETE', url: '/admin/characters/eco-tire', headers: auth });
    assert.equal(deleted.statusCode, 204);
    await synced();
    assert.equal(replica.get(character.id), undefined);
    const again = await app.inject({ method: 'DELETE', url: '/admin/characters/eco-tire', headers: auth });
    assert.equal(again.statusCode, 404);
  });

  it('moves the default: the previous default is demoted in the same transaction', async () => {
    const before = replica.findOne('default', 'default')!;
    const res = await app.inject({
      method: 'PUT',
      url: '/admin/characters/eco-star',
      headers: auth,
      payload: { name: 'Star', match_label: 'star', is_default: true },
    });
    assert.equal(res.statusCode, 201);
    await synced();
    assert.equal(replica.findOne('default', 'default')?.code, 'eco-star');
    assert.equal(replica.get(before.id)?.is_default, false);
    assert.equal(replica.findAll('default', 'default').length, 1);
    const { rows } = await fx.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM characters WHERE is_default',
    );
    assert.equal(rows[0]!.n, 1);
  });

  it('refuses bad admin bodies and changes nothing', async () => {
    const version = await current();
    const bad: Array<[object | string, string]> = [
      [{ match_label: 'x' }, 'invalid_body'],
      [{ name: '', match_label: 'x' }, 'invalid_body'],
      [{ name: 'n', match_label: 'x', is_default: 'yes' }, 'invalid_body'],
      [{ name: 'n', match_label: 'x', surprise: 1 }, 'invalid_body'],
      ['{"name":', 'invalid_json'],
    ];
    for (const [payload, code] of bad) {
      const res = await app.inject({
        method: 'PUT',
        url: '/admin/characters/eco-bad',
        headers: { ...auth, 'content-type': 'application/json' },
        payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
      });
      assert.equal(res.statusCode, 400, res.body);
      assert.equal(res.json<{ error: string }>().error, code);
    }
    const longCode = await app.inject({
      method: 'PUT',
      url: `/admin/characters/${'c'.repeat(201)}`,
      headers: auth,
      payload: { name: 'n', match_label: 'x' },
    });
    assert.equal(longCode.json<{ error: string }>().error, 'invalid_code');
    assert.equal(await current(), version, 'no version was used');
  });

  it('imports a CSV all or nothing, and reports every error with its line', async () => {
    const version = await current();
    const count = await repository.count();
    const badCsv = 'code,name,match_label,type_label,dialog,is_default\na,A,x,t,d,maybe\na,B,y,t,d,\n';
    const refused = await app.inject({
      method: 'POST',
      url: '/admin/characters/import',
      headers: { ...auth, 'content-type': 'text/csv' },
      payload: badCsv,
    });
    assert.equal(refused.statusCode, 422);
    const body = refused.json<{
      error: string;
      error_count: number;
      errors: Array<{ line: number; code: string }>;
    }>();
    assert.equal(body.error, 'invalid_csv');
    assert.equal(body.error_count, 2);
    assert.deepEqual(
      body.errors.map((e) => [e.line, e.code]),
      [
        [2, 'CSV_BAD_BOOLEAN'],
        [3, 'CSV_DUPLICATE_CODE'],
      ],
    );
    assert.equal(await current(), version);
    assert.equal(await repository.count(), count);
    const tooBig = await app.inject({
      method: 'POST',
      url: '/admin/characters/import',
      headers: { ...auth, 'content-type': 'text/csv' },
      payload: `code,name,match_label,type_label,dialog\n${'a,b,c,d,e\n'.repeat(500)}`,
    });
    assert.equal(tooBig.statusCode, 413);
    const json = await app.inject({
      method: 'POST',
      url: '/admin/characters/import',
      headers: auth,
      payload: {},
    });
    assert.equal(json.statusCode, 415);
    const ok = await app.inject({
      method: 'POST',
      url: '/admin/characters/import',
      headers: { ...auth, 'content-type': 'text/csv' },
      payload: 'code,name,match_label,type_label,dialog\nonly,Only,only,,\n',
    });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(ok.json<{ imported: number }>().imported, 1);
    await synced();
    assert.deepEqual(
      replica.values().map((c) => c.code),
      ['only'],
    );
  });

  it('refuses a CSV wrong on every line with the first 1000 errors and the count of the rest', async () => {
    const version = await current();
    // The default 32 MiB limit: 4 MB of `x\n`, 2,000,000 errors.
    const wide = buildCatalogApp({ replica, repository, adminToken: TOKEN });
    fx.defer(() => wide.close());
    const refused = await wide.inject({
      method: 'POST',
      url: '/admin/characters/import',
      headers: { ...auth, 'content-type': 'text/csv' },
      payload: `code,name,match_label,type_label,dialog\n${'x\n'.repeat(2_000_000)}`,
    });
    assert.equal(refused.statusCode, 422);
    assert.ok(refused.body.length < 200_000, `a small answer: ${refused.body.length} bytes`);
    const body = refused.json<{
      error: string;
      message: string;
      error_count: number;
      more_errors: number;
      errors: Array<{ line: number; code: string }>;
    }>();
    assert.equal(body.error, 'invalid_csv');
    assert.equal(body.error_count, 2_000_000);
    assert.equal(body.more_errors, 1_999_000);
    assert.equal(body.errors.length, 1000);
    assert.deepEqual(body.errors[0], {
      line: 2,
      code: 'CSV_MISSING_FIELD',
      message: 'expected 5 fields (code,name,match_label,type_label,dialog), found 1',
    });
    assert.equal(body.message, 'nothing was imported; ... and 1999000 more errors');
    assert.equal(await current(), version, 'nothing changed');
  });

  it('keeps accepting writes while the broker is down; they reach the replica when it returns', async () => {
    await fx.stopRelays();
    const proxy = await rabbitProxy();
    fx.defer(() => proxy.close());
    await fx.startRelay({ proxy, bus: { publishTimeoutMs: 500 } });
    proxy.cut();
    for (let i = 0; i < 5; i++) {
      const res = await app.inject({
        method: 'PUT',
        url: `/admin/characters/outage-${i}`,
        headers: auth,
        payload: { name: `Outage ${i}`, match_label: `outage-${i}` },
      });
      assert.equal(res.statusCode, 201);
    }
    assert.equal(replica.findOne('code', 'outage-4'), undefined, 'not broadcast yet');
    proxy.restore();
    await synced();
    for (let i = 0; i < 5; i++) assert.ok(replica.findOne('code', `outage-${i}`));
  });

  it('imports 300,000 rows: too big to send, a reload marker reaches every replica, and the next write propagates as usual', async () => {
    await fx.stopRelays();
    const relay = await fx.startRelay();
    // A second replica on its own connection: "every replica".
    const bus = await testBus();
    const other = new ReplicatedCache<Character>({
      dataset: fx.dataset,
      bus,
      source: catalogSource(fx.db.pool),
    });
    await other.start();
    try {
      const big = parseCatalogCsv(bigCatalogCsv(300_000));
      assert.ok(big.ok);
      const result = await repository.replaceAll(big.rows);
      assert.equal(result.total, 300_000);
      await waitFor(
        () => [replica, other].every((r) => r.version === result.version),
        'both replicas at the import',
        120_000,
        50,
      );
      for (const r of [replica, other]) {
        // The version is the import's only once its data is there (the marker does not advance it).
        assert.equal(r.size, 300_000);
        assert.equal(r.findOne('code', 'char-300000')?.is_default, true);
        assert.equal(r.stats().last_resync_reason, 'reload');
      }
      assert.equal(relay.stats.reload_markers, 1, 'the full_refresh (tens of MB) went out as a marker');
      const { version } = await repository.upsertByCode({
        code: 'after-import',
        name: 'After',
        match_label: 'after',
        type_label: null,
        dialog: null,
        is_default: false,
      });
      await waitFor(() => [replica, other].every((r) => r.version === version), 'the next write everywhere');
      for (const r of [replica, other]) {
        assert.ok(r.findOne('code', 'after-import'));
        assert.equal(r.stats().last_resync_reason, 'reload', 'applied as an event, no reload');
      }
    } finally {
      await other.close();
      await bus.close();
    }
  });
});

/**
 * Sends a request's head and only the first 64 KiB of a body announced as
 * `length` bytes (or as chunked), then waits for the answer with the rest
 * never sent: a server that buffers the body before answering never answers.
 */
async function answerBeforeBody(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  length: number | 'chunked',
): Promise<{ status: number; body: string }> {
  const socket = connect(port, '127.0.0.1');
  let received = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (received += chunk));
  socket.on('error', () => undefined);
  const first = Buffer.alloc(64 * 1024, 'a,b,c,d,e\n');
  const framing =
    length === 'chunked' ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(length) };
  const head = Object.entries({ host: `127.0.0.1:${port}`, ...headers, ...framing })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.write(`${method} ${path} HTTP/1.1\r\n${head}\r\n`);
  socket.write(
    length === 'chunked' ? `${first.length.toString(16)}\r\n${first.toString('latin1')}\r\n` : first,
  );
  try {
    await waitFor(() => {
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const size = /\r\ncontent-length: (\d+)/i.exec(received.slice(0, end));
      return received.length >= end + 4 + Number(size?.[1] ?? 0);
    }, `an answer to ${method} ${path} before its body was sent`);
  } finally {
    socket.destroy();
  }
  const end = received.indexOf('\r\n\r\n');
  return { status: Number(received.slice(9, 12)), body: received.slice(end + 4) };
}

describe('catalog API: body limits, before the body is read', () => {
  const big = 32 * 1024 * 1024;
  let server: FastifyInstance;
  let port: number;
  before(async () => {
    // The default limits: 64 KiB of JSON, 32 MiB of CSV for the admin import.
    server = buildCatalogApp({ replica, repository, adminToken: TOKEN });
    await server.listen({ port: 0, host: '127.0.0.1' });
    port = (server.server.address() as AddressInfo).port;
    fx.defer(() => server.close());
  });

  it('refuses a large text/csv body to a public route with 415 without reading it (anonymous)', async () => {
    for (const length of [big, 'chunked'] as const) {
      for (const type of ['text/csv', 'text/plain', 'application/octet-stream']) {
        const res = await answerBeforeBody(
          port,
          'POST',
          '/api/v1/characters/match',
          { 'content-type': type },
          length,
        );
        assert.equal(res.status, 415, `${type} ${length}: ${res.body}`);
        assert.equal((JSON.parse(res.body) as { error: string }).error, 'unsupported_media_type');
      }
    }
  });

  it('refuses an announced JSON body past 64 KiB with 413 before reading it', async () => {
    const res = await answerBeforeBody(
      port,
      'POST',
      '/api/v1/characters/match',
      { 'content-type': 'application/json' },
      big,
    );
    assert.equal(res.status, 413, res.body);
    assert.equal((JSON.parse(res.body) as { error: string }).error, 'body_too_large');
  });

  it('takes a large CSV only on the admin import, and only after the token check', async () => {
    const csv = { 'content-type': 'text/csv' };
    const anonymous = await answerBeforeBody(port, 'POST', '/admin/characters/import', csv, big);
    assert.equal(anonymous.status, 401, anonymous.body);
    const wrong = await answerBeforeBody(
      port,
      'POST',
      '/admin/characters/import',
      { ...csv, authorization: 'Bearer wrong' },
      'chunked',
    );
    assert.equal(wrong.status, 401, wrong.body);
    // The other admin routes take JSON-sized bodies, CSV or not.
    const put = await answerBeforeBody(port, 'PUT', '/admin/characters/x', { ...csv, ...auth }, 1024 * 1024);
    assert.equal(put.status, 413, put.body);
    const tooLarge = await answerBeforeBody(
      port,
      'POST',
      '/admin/characters/import',
      { ...csv, ...auth },
      big + 1,
    );
    assert.equal(tooLarge.status, 413, tooLarge.body);
    // Within the limit the import reads it all (here: a small invalid file, so nothing changes).
    const res = await fetch(`http://127.0.0.1:${port}/admin/characters/import`, {
      method: 'POST',
      headers: { ...csv, ...auth },
      body: `code,name,match_label,type_label,dialog\n${'a,b,c,d,e\n'.repeat(100_000)}`,
    });
    assert.equal(res.status, 422);
    assert.equal(((await res.json()) as { error: string }).error, 'invalid_csv');
  });
});
