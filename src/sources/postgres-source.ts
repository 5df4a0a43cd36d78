import type pg from 'pg';
import { withTransaction } from '../db/transaction.ts';
import type { SnapshotSource } from '../replica/source.ts';

export interface PostgresSourceOptions<V, R extends pg.QueryResultRow> {
  pool: pg.Pool;
  /** The dataset's row in cachecast_versions. */
  dataset: string;
  /** Selects every entry. */
  selectAll: string;
  /** Selects one entry by key ($1), for the `source` degraded-read policy. */
  selectOne?: string;
  toEntry(row: R): [string, V];
}

/**
 * A dataset stored in PostgreSQL. Data and version are read in one
 * REPEATABLE READ transaction, so the snapshot is exactly that version.
 */
export class PostgresSource<V, R extends pg.QueryResultRow = pg.QueryResultRow> implements SnapshotSource<V> {
  readonly #o: PostgresSourceOptions<V, R>;

  constructor(options: PostgresSourceOptions<V, R>) {
    this.#o = options;
  }

  load(put: (key: string, value: V) => void): Promise<{ version: number }> {
    return withTransaction(
      this.#o.pool,
      async (client) => {
        const version = await readVersion(client, this.#o.dataset);
        const { rows } = await client.query<R>(this.#o.selectAll);
        for (const row of rows) {
          const [key, value] = this.#o.toEntry(row);
          put(key, value);
        }
        return { version };
      },
      'REPEATABLE READ',
      true,
    );
  }

  version(): Promise<number> {
    return readVersion(this.#o.pool, this.#o.dataset);
  }

  async get(key: string): Promise<V | undefined> {
    if (!this.#o.selectOne) return undefined;
    const { rows } = await this.#o.pool.query<R>(this.#o.selectOne, [key]);
    return rows[0] ? this.#o.toEntry(rows[0])[1] : undefined;
  }
}

export async function readVersion(db: pg.Pool | pg.PoolClient, dataset: string): Promise<number> {
  const { rows } = await db.query<{ version: string }>(
    'SELECT version::text AS version FROM cachecast_versions WHERE dataset = $1',
    [dataset],
  );
  return rows[0] ? Number(rows[0].version) : 0;
}
