import type pg from 'pg';
import { RELOAD_TYPE } from '../events/control.ts';
import { withTransaction } from '../db/transaction.ts';
import type { DigestAlgorithm } from '../replica/digest.ts';
import { NO_EXPIRY_BUCKET } from '../replica/digest.ts';
import type {
  SnapshotResult,
  SnapshotSource,
  SourceChange,
  SourceChanges,
  SourceState,
} from '../replica/source.ts';

export interface PostgresSourceOptions<V, R extends pg.QueryResultRow> {
  pool: pg.Pool;
  /** The dataset's row in cachecast_versions. */
  dataset: string;
  /** Selects every entry. */
  selectAll: string;
  /** Selects one entry by key ($1), for the `source` degraded-read policy. */
  selectOne?: string;
  toEntry(row: R): [string, V];
  /**
   * The table keeps cachecast_versions.digest with a trigger (see the catalog's
   * in db/migrations.ts) hashing exactly what the dataset's digestText does.
   * Without one, replicas compare versions only. @default false
   */
  digest?: boolean;
  /** Changes larger than this come from changesSince() as reload markers. @default 1 MiB */
  maxChangeBytes?: number;
  /** Changes changesSince() returns at most (beyond: a full load is cheaper). @default 1000 */
  maxChanges?: number;
}

interface StateRow {
  epoch: string;
  version: string;
  digest: string;
  pending: string;
}

const STATE = `SELECT v.epoch, v.version::text AS version, lpad(to_hex(v.digest), 16, '0') AS digest,
  (SELECT count(*) FROM cachecast_outbox o WHERE o.dataset = v.dataset AND o.sent_at IS NULL)::text AS pending
  FROM cachecast_versions v WHERE v.dataset = $1`;

/**
 * A dataset stored in PostgreSQL. Data, version, epoch and digest are read in
 * one REPEATABLE READ transaction, so the snapshot is exactly that state; the
 * outbox is the change log a replica repairs a lost event from.
 */
export class PostgresSource<V, R extends pg.QueryResultRow = pg.QueryResultRow> implements SnapshotSource<V> {
  readonly #o: PostgresSourceOptions<V, R>;
  readonly digestAlgorithm: DigestAlgorithm | undefined;

  constructor(options: PostgresSourceOptions<V, R>) {
    this.#o = options;
    this.digestAlgorithm = options.digest ? 'md5' : undefined;
  }

  load(put: (key: string, value: V) => void): Promise<SnapshotResult> {
    return withTransaction(
      this.#o.pool,
      async (client) => {
        const state = await this.#state(client);
        const { rows } = await client.query<R>(this.#o.selectAll);
        for (const row of rows) {
          const [key, value] = this.#o.toEntry(row);
          put(key, value);
        }
        const result: SnapshotResult = { version: state.version, epoch: state.epoch };
        if (this.digestAlgorithm && state.digest !== undefined) {
          result.digest = { atVersion: state.version, buckets: [[NO_EXPIRY_BUCKET, state.digest]] };
        }
        return result;
      },
      'REPEATABLE READ',
      true,
    );
  }

  async #state(db: pg.Pool | pg.PoolClient): Promise<SourceState> {
    const { rows } = await db.query<StateRow>(STATE, [this.#o.dataset]);
    const row = rows[0];
    // No row yet: nothing was ever written (the epoch is born with the first write).
    if (!row)
      return this.digestAlgorithm
        ? { epoch: '', version: 0, digest: '0000000000000000' }
        : { epoch: '', version: 0 };
    const state: SourceState = {
      epoch: row.epoch,
      version: Number(row.version),
      pending: Number(row.pending),
    };
    if (this.digestAlgorithm) state.digest = row.digest;
    return state;
  }

  version(): Promise<number> {
    return readVersion(this.#o.pool, this.#o.dataset);
  }

  /** The whole dataset is one digest bucket: `fromBucket` does not apply. */
  state(): Promise<SourceState> {
    return this.#state(this.#o.pool);
  }

  changesSince(epoch: string, version: number): Promise<SourceChanges | undefined> {
    const maxBytes = this.#o.maxChangeBytes ?? 1024 * 1024;
    const limit = this.#o.maxChanges ?? 1000;
    return withTransaction(
      this.#o.pool,
      async (client) => {
        const state = await this.#state(client);
        const wanted = state.version - version;
        if (state.epoch !== epoch || wanted < 0 || wanted > limit) return undefined;
        // A row of another epoch (a recreated versions row) cannot continue this one.
        const { rows } = await client.query<{
          version: string;
          epoch: string | null;
          payload: string | null;
        }>(
          `SELECT version::text AS version, epoch,
             CASE WHEN octet_length(payload) > $3 THEN NULL ELSE payload END AS payload
           FROM cachecast_outbox WHERE dataset = $1 AND version > $2 ORDER BY version`,
          [this.#o.dataset, version, maxBytes],
        );
        const changes: SourceChange[] = [];
        for (const row of rows) {
          const v = Number(row.version);
          if (v > state.version) break;
          if (v !== version + changes.length + 1 || (row.epoch !== null && row.epoch !== epoch))
            return undefined;
          const event =
            row.payload === null
              ? { type: RELOAD_TYPE }
              : (JSON.parse(row.payload) as Record<string, unknown>);
          changes.push({ version: v, event });
        }
        if (changes.length !== wanted) return undefined;
        return { epoch, changes, state };
      },
      'REPEATABLE READ',
      true,
    );
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
