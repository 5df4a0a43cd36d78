import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { DATABASE_URL, uniqueName } from '../support/env.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/cachecast.js');
const schema = uniqueName('cli');
let admin: pg.Client;

function urlWithSchema(): string {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return url.toString();
}

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

before(async () => {
  admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
});
after(async () => {
  await admin.query(`DROP SCHEMA ${schema} CASCADE`);
  await admin.end();
});

describe('cachecast CLI', () => {
  it('--help lists the commands', async () => {
    const { code, stdout } = await cli(['--help']);
    assert.equal(code, 0);
    assert.match(stdout, /migrate/);
  });

  it('migrate creates the schema, and a second run changes nothing', async () => {
    const first = await cli(['migrate'], { DATABASE_URL: urlWithSchema() });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /applied migrations 1, 2, 3/);
    const { rows } = await admin.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [schema],
    );
    assert.deepEqual(
      rows.map((r: { table_name: string }) => r.table_name),
      ['cachecast_migrations', 'cachecast_outbox', 'cachecast_versions', 'character_grants', 'characters'],
    );
    const second = await cli(['migrate'], { DATABASE_URL: urlWithSchema() });
    assert.equal(second.code, 0);
    assert.match(second.stdout, /up to date/);
  });

  it('fails with one line naming the problem, never the password', async () => {
    const bad = await cli(['migrate'], { DATABASE_URL: 'mysql://user:hunter2@127.0.0.1/db' });
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1);
    assert.match(bad.stderr, /^cachecast: CONFIG_INVALID: DATABASE_URL/);
    assert.doesNotMatch(bad.stderr, /hunter2/);
    const unreachable = await cli(['migrate'], { DATABASE_URL: 'postgres://user:hunter2@127.0.0.1:1/db' });
    assert.equal(unreachable.code, 1);
    assert.equal(unreachable.stderr.trim().split('\n').length, 1);
    assert.doesNotMatch(unreachable.stderr, /hunter2/);
    const unknown = await cli(['frobnicate']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown command/);
  });

  it('import validates first, lists every error with its line, and changes nothing on error', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cachecast-cli-'));
    const bad = join(dir, 'bad.csv');
    await writeFile(bad, 'code,name,match_label,type_label,dialog,is_default\na,A,x,,,nope\na,B,,,,\n');
    const refused = await cli(['import', bad], { DATABASE_URL: urlWithSchema() });
    assert.equal(refused.code, 1);
    const lines = refused.stderr.trim().split('\n');
    assert.match(lines[0]!, /^bad\.csv:2: CSV_BAD_BOOLEAN/);
    assert.ok(
      lines.some((l) => /^bad\.csv:3: CSV_EMPTY_FIELD/.test(l)),
      refused.stderr,
    );
    assert.ok(
      lines.some((l) => /^bad\.csv:3: CSV_DUPLICATE_CODE/.test(l)),
      refused.stderr,
    );
    assert.match(lines.at(-1)!, /^cachecast: \d+ error\(s\) in bad\.csv; nothing was imported$/);
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.characters`);
    assert.equal((rows[0] as { n: number }).n, 0);
    const missing = await cli(['import', join(dir, 'nope.csv')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^cachecast: cannot read .*nope\.csv: ENOENT\n$/);
  });

  it('import of a file wrong on every line lists the first 1000 errors and counts the rest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cachecast-cli-'));
    const bad = join(dir, 'all-bad.csv');
    await writeFile(bad, `code,name,match_label,type_label,dialog\n${'x\n'.repeat(2_000_000)}`);
    const refused = await cli(['import', '--dry-run', bad], { DATABASE_URL: urlWithSchema() });
    assert.equal(refused.code, 1);
    const lines = refused.stderr.trim().split('\n');
    assert.equal(lines.length, 1002, 'the first 1000 errors, the count of the rest, the summary');
    assert.equal(
      lines[0],
      'all-bad.csv:2: CSV_MISSING_FIELD: expected 5 fields (code,name,match_label,type_label,dialog), found 1',
    );
    assert.match(lines[999]!, /^all-bad\.csv:1001: CSV_MISSING_FIELD/);
    assert.equal(lines[1000], '... and 1999000 more errors');
    assert.equal(lines[1001], 'cachecast: 2000000 error(s) in all-bad.csv; nothing was imported');
  });

  it('import --dry-run validates only; import replaces the catalog and broadcasts it', async () => {
    const sample = join(import.meta.dirname, '../../data/sample-catalog.csv');
    const dry = await cli(['import', '--dry-run', sample], { DATABASE_URL: urlWithSchema() });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /13 characters, valid; nothing changed/);
    const done = await cli(['import', sample], { DATABASE_URL: urlWithSchema() });
    assert.equal(done.code, 0, done.stderr);
    assert.match(
      done.stdout,
      /imported 13 characters \(13 new, 0 updated, 0 removed\); full_refresh version 1 broadcast/,
    );
    const { rows } = await admin.query(
      `SELECT count(*)::int AS n FROM ${schema}.cachecast_outbox WHERE sent_at IS NULL`,
    );
    assert.equal((rows[0] as { n: number }).n, 0, 'published, not left in the outbox');
    const again = await cli(['import', sample], { DATABASE_URL: urlWithSchema() });
    assert.match(again.stdout, /\(0 new, 13 updated, 0 removed\); full_refresh version 2/);
    const warm = await cli(['warmup'], { DATABASE_URL: urlWithSchema() });
    assert.equal(warm.code, 0, warm.stderr);
    assert.match(warm.stdout, /full_refresh of 13 characters \(version 3\) broadcast/);
  });

  it('import with the broker unreachable commits and leaves the event to the outbox', async () => {
    const sample = join(import.meta.dirname, '../../data/sample-catalog.csv');
    const res = await cli(['import', sample], {
      DATABASE_URL: urlWithSchema(),
      RABBITMQ_URL: 'amqp://guest:guest@127.0.0.1:1/',
      CACHECAST_PUBLISH_TIMEOUT_MS: '1000',
    });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /committed; not broadcast yet/);
    const { rows } = await admin.query(
      `SELECT count(*)::int AS n FROM ${schema}.cachecast_outbox WHERE sent_at IS NULL`,
    );
    assert.equal((rows[0] as { n: number }).n, 1);
  });

  it('serve catalog runs in the foreground, is ready, and drains on SIGTERM with exit 0', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', 'catalog'], {
      env: {
        ...process.env,
        DATABASE_URL: urlWithSchema(),
        PORT: '0',
        ADMIN_PORT: '0',
        HOST: '127.0.0.1',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor(() => /catalog running: http (\S+), admin (\S+)/.test(stdout), 'the startup line', 20_000);
    const [, http, adminUrl] = /catalog running: http (\S+), admin (\S+)/.exec(stdout)!;
    assert.equal((await fetch(`${adminUrl}/readyz`)).status, 200);
    const catalog = (await (await fetch(`${http}/api/v1/characters/catalog`)).json()) as unknown[];
    assert.equal(catalog.length, 13);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  it('every service started without CACHE_EVENT_SECRET says so in exactly one warning line; signed, none', async () => {
    /** Starts `serve <service>`, waits for its startup line, stops it; returns its warning lines about the secret. */
    const warnings = async (service: string, secret: string): Promise<string[]> => {
      const child = spawn(process.execPath, [BIN, 'serve', service], {
        env: {
          ...process.env,
          DATABASE_URL: urlWithSchema(),
          PORT: '0',
          ADMIN_PORT: '0',
          GRPC_PORT: '0',
          HOST: '127.0.0.1',
          LOG_LEVEL: 'info',
          CACHE_EVENT_SECRET: secret,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        await waitFor(() => stdout.includes(`${service} running:`), `${service} started:\n${stdout}`, 30_000);
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, 0, `${service} exit code`);
      return stdout.split('\n').filter((line) => line.includes('CACHE_EVENT_SECRET'));
    };
    const services = ['auth', 'ext-authz', 'catalog', 'match-worker'];
    const unsigned = await Promise.all(services.map((s) => warnings(s, '')));
    const signed = await Promise.all(services.map((s) => warnings(s, 'event-secret-0123456789abcdef')));
    for (const [i, service] of services.entries()) {
      assert.equal(unsigned[i]!.length, 1, `${service}: ${unsigned[i]!.join('\n')}`);
      const line = JSON.parse(unsigned[i]![0]!) as { level: number; msg: string };
      assert.equal(line.level, 40, 'a warning');
      assert.match(line.msg, /^CACHE_EVENT_SECRET is not set: events are sent and accepted unsigned/);
      assert.deepEqual(signed[i], [], `${service} signed: no warning, and the secret itself is never logged`);
    }
  });
});
