import type pg from 'pg';
import type { Clock } from '../clock.ts';
import { withTransaction } from '../db/transaction.ts';
import { RELOAD_TYPE } from '../events/control.ts';
import type { ClearEntries, OutboxEntry, OutboxStore } from './store.ts';

/**
 * Only one drainer per outbox publishes at a time, so events leave in version
 * order. Keyed by the outbox table itself too (the one search_path resolves):
 * an outbox in another schema of the same database must not make this one's
 * relays wait or skip a turn.
 */
const RELAY_LOCK = 7_240_002;

/** Sent rows are deleted at most this often. */
const CLEANUP_EVERY_MS = 60_000;

export interface PostgresOutboxEntry extends OutboxEntry {
  readonly id: string;
}

export interface PostgresOutboxStoreOptions {
  pool: pg.Pool;
  clock: Clock;
  /** Sent rows older than this are deleted. */
  retentionMs: number;
  /** Larger payloads are not read: the entry is a reload marker at their version. */
  maxEventBytes: number;
  /** Called for each reload marker read (the relay's stats). */
  onReloadMarker?: () => void;
}

/**
 * The `cachecast_outbox` table (appendToOutbox in outbox.ts writes it in the
 * writer's transaction). A batch runs in one transaction holding the relay
 * lock: rows are marked sent in it, so a batch whose publish failed commits
 * nothing and its rows stay unsent.
 */
export class PostgresOutboxStore implements OutboxStore<PostgresOutboxEntry> {
  readonly #pool: pg.Pool;
  readonly #clock: Clock;
  readonly #retentionMs: number;
  readonly #maxEventBytes: number;
  readonly #onReloadMarker: () => void;
  #lastCleanup = 0;

  constructor(options: PostgresOutboxStoreOptions) {
    this.#pool = options.pool;
    this.#clock = options.clock;
    this.#retentionMs = options.retentionMs;
    this.#maxEventBytes = options.maxEventBytes;
    this.#onReloadMarker = options.onReloadMarker ?? (() => undefined);
  }

  batch<T>(
    limit: number,
    work: (entries: readonly PostgresOutboxEntry[], clear: ClearEntries<PostgresOutboxEntry>) => Promise<T>,
  ): Promise<T | 'busy'> {
    // A failed publish throws out of the transaction: nothing is marked sent.
    return withTransaction(this.#pool, async (client) => {
      const { rows: lock } = await client.query<{ ok: boolean }>(
        `SELECT pg_try_advisory_xact_lock($1, to_regclass('cachecast_outbox')::oid::int) AS ok`,
        [RELAY_LOCK],
      );
      if (!lock[0]?.ok) return 'busy' as const;
      const { rows } = await client.query<{
        id: string;
        dataset: string;
        version: string;
        epoch: string | null;
        topic: string;
        payload: string | null;
      }>(
        // Qualified: an unqualified ORDER BY would sort by the text aliases (1, 10, 100, 2, ...).
        // A payload over the limit is not even read: it goes out as a reload marker.
        `SELECT o.id::text AS id, o.dataset, o.version::text AS version, o.epoch, o.topic,
           CASE WHEN octet_length(o.payload) > $2 THEN NULL ELSE o.payload END AS payload
         FROM cachecast_outbox o WHERE o.sent_at IS NULL ORDER BY o.dataset, o.version LIMIT $1`,
        [limit, this.#maxEventBytes],
      );
      const entries = rows.map((row): PostgresOutboxEntry => {
        if (row.payload === null) this.#onReloadMarker();
        return {
          id: row.id,
          topic: row.topic,
          payload:
            row.payload === null
              ? { type: RELOAD_TYPE, dataset: row.dataset }
              : (JSON.parse(row.payload) as Record<string, unknown>),
          version: Number(row.version),
          epoch: row.epoch ?? undefined,
        };
      });
      return work(entries, (sent) => markSent(client, sent));
    });
  }

  async clear(sent: readonly PostgresOutboxEntry[]): Promise<void> {
    await markSent(this.#pool, sent);
  }

  async pending(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM cachecast_outbox WHERE sent_at IS NULL',
    );
    return Number(rows[0]?.n ?? 0);
  }

  async tidy(): Promise<void> {
    const now = this.#clock.now();
    if (now - this.#lastCleanup < CLEANUP_EVERY_MS) return;
    this.#lastCleanup = now;
    await this.#pool.query(
      `DELETE FROM cachecast_outbox WHERE sent_at IS NOT NULL AND sent_at < now() - ($1::bigint * interval '1 millisecond')`,
      [this.#retentionMs],
    );
  }
}

async function markSent(db: pg.Pool | pg.PoolClient, sent: readonly PostgresOutboxEntry[]): Promise<void> {
  if (sent.length === 0) return;
  await db.query('UPDATE cachecast_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])', [
    sent.map((entry) => entry.id),
  ]);
}
