import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { DATABASE_URL, uniqueName } from '../support/env.ts';

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
    assert.match(first.stdout, /applied migrations 1, 2/);
    const { rows } = await admin.query(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [schema],
    );
    assert.deepEqual(
      rows.map((r: { table_name: string }) => r.table_name),
      ['cachecast_migrations', 'cachecast_outbox', 'cachecast_versions', 'characters'],
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
});
