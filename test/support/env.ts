import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createClient } from 'redis';
import { DEFAULTS } from '../../src/config/env.ts';
import { migrate } from '../../src/db/migrate.ts';

export const RABBITMQ_URL = process.env.RABBITMQ_URL || DEFAULTS.RABBITMQ_URL;
export const REDIS_URL = process.env.REDIS_URL || DEFAULTS.REDIS_URL;
export const DATABASE_URL = process.env.DATABASE_URL || DEFAULTS.DATABASE_URL;

/** A name no other test (or earlier run) uses: topics, key prefixes, schemas. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

export interface TestDatabase {
  pool: pg.Pool;
  schema: string;
  config: pg.ClientConfig;
  /** Another pool on the same schema (e.g. through a proxy). */
  makePool(overrides?: pg.PoolConfig): pg.Pool;
  drop(): Promise<void>;
}

/** A fresh, migrated schema per test file, so files never see each other's rows. */
export async function testDatabase(): Promise<TestDatabase> {
  const schema = uniqueName('t');
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const config: pg.ClientConfig = { connectionString: DATABASE_URL, options: `-c search_path=${schema}` };
  const makePool = (overrides: pg.PoolConfig = {}): pg.Pool =>
    new pg.Pool({ ...config, max: 5, ...overrides });
  const pool = makePool();
  await migrate(pool);
  return {
    pool,
    schema,
    config,
    makePool,
    async drop() {
      await pool.end();
      const c = new pg.Client({ connectionString: DATABASE_URL });
      await c.connect();
      await c.query(`DROP SCHEMA ${schema} CASCADE`);
      await c.end();
    },
  };
}

export async function redisClient(url = REDIS_URL): Promise<ReturnType<typeof createClient>> {
  const client = createClient({ url, disableOfflineQueue: true });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}
