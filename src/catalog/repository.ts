import type pg from 'pg';
import type { Character } from '../datasets/catalog.ts';
import { CATALOG_DATASET, CATALOG_TOPIC, CHARACTER_COLUMNS } from '../datasets/catalog.ts';
import { withTransaction } from '../db/transaction.ts';
import { appendToOutbox } from '../outbox/outbox.ts';
import type { CharacterInput } from './character-input.ts';

export interface ReplaceResult {
  version: number;
  inserted: number;
  updated: number;
  deleted: number;
  total: number;
}

/**
 * Writes to the catalog: each change and its event commit in one transaction
 * (the outbox), so a write that succeeded reaches every replica, whatever
 * happens to the broker or this process afterwards.
 */
export class CatalogRepository {
  readonly #pool: pg.Pool;
  readonly #topic: string;

  constructor(pool: pg.Pool, options: { topic?: string } = {}) {
    this.#pool = pool;
    this.#topic = options.topic ?? CATALOG_TOPIC;
  }

  #event(tx: pg.PoolClient, payload: Record<string, unknown>): Promise<number> {
    return appendToOutbox(tx, { dataset: CATALOG_DATASET, topic: this.#topic, payload });
  }

  /** Creates or updates the character with this code; returns it once committed. */
  upsertByCode(input: CharacterInput): Promise<{ character: Character; created: boolean; version: number }> {
    return withTransaction(this.#pool, async (tx) => {
      if (input.is_default) {
        // One default at most: the previous one loses it, and replicas hear about it first.
        const { rows: demoted } = await tx.query<Character>(
          `UPDATE characters SET is_default = false, updated_at = now()
           WHERE is_default AND code <> $1 RETURNING ${CHARACTER_COLUMNS}`,
          [input.code],
        );
        for (const character of demoted) await this.#event(tx, { type: 'upsert', character });
      }
      const { rows } = await tx.query<Character & { created: boolean }>(
        `INSERT INTO characters (id, code, name, match_label, type_label, dialog, is_default)
         VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6)
         ON CONFLICT (code) DO UPDATE SET name = $2, match_label = $3, type_label = $4, dialog = $5,
           is_default = $6, updated_at = now()
         RETURNING ${CHARACTER_COLUMNS}, (xmax = 0) AS created`,
        [input.code, input.name, input.match_label, input.type_label, input.dialog, input.is_default],
      );
      const { created, ...character } = rows[0]!;
      const version = await this.#event(tx, { type: 'upsert', character });
      return { character, created, version };
    });
  }

  /** Deletes the character with this code; null when there is none (nothing is published). */
  deleteByCode(code: string): Promise<{ character: Character; version: number } | null> {
    return withTransaction(this.#pool, async (tx) => {
      const { rows } = await tx.query<Character>(
        `DELETE FROM characters WHERE code = $1 RETURNING ${CHARACTER_COLUMNS}`,
        [code],
      );
      const character = rows[0];
      if (!character) return null;
      const version = await this.#event(tx, { type: 'delete', character_id: character.id });
      return { character, version };
    });
  }

  /**
   * Replaces the whole catalog with `rows` (validated beforehand) and
   * broadcasts a full_refresh, all in one transaction: all or nothing. Codes
   * that stay keep their ids (grants refer to them).
   */
  replaceAll(rows: readonly CharacterInput[]): Promise<ReplaceResult> {
    return withTransaction(this.#pool, async (tx) => {
      // Admin writes wait for the import; reads go on.
      await tx.query('LOCK TABLE characters IN EXCLUSIVE MODE');
      // Clear the default first: the one-default index is checked row by row.
      await tx.query('UPDATE characters SET is_default = false WHERE is_default');
      const codes = rows.map((r) => r.code);
      const { rowCount: deleted } = await tx.query(
        'DELETE FROM characters WHERE NOT (code = ANY($1::text[]))',
        [codes],
      );
      const { rows: written } = await tx.query<{ created: boolean }>(
        `INSERT INTO characters (id, code, name, match_label, type_label, dialog, is_default)
         SELECT gen_random_uuid(), * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[])
         ON CONFLICT (code) DO UPDATE SET name = excluded.name, match_label = excluded.match_label,
           type_label = excluded.type_label, dialog = excluded.dialog, is_default = excluded.is_default,
           updated_at = now()
         RETURNING (xmax = 0) AS created`,
        [
          codes,
          rows.map((r) => r.name),
          rows.map((r) => r.match_label),
          rows.map((r) => r.type_label),
          rows.map((r) => r.dialog),
          rows.map((r) => r.is_default),
        ],
      );
      const inserted = written.filter((w) => w.created).length;
      const version = await this.#fullRefresh(tx);
      return {
        version,
        inserted,
        updated: written.length - inserted,
        deleted: deleted ?? 0,
        total: rows.length,
      };
    });
  }

  /** Broadcasts the whole catalog as it is (the seed's deploy-time warm-up). */
  warmup(): Promise<{ version: number; count: number }> {
    return withTransaction(this.#pool, async (tx) => {
      const { rows } = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM characters');
      const version = await this.#fullRefresh(tx);
      return { version, count: rows[0]!.n };
    });
  }

  async #fullRefresh(tx: pg.PoolClient): Promise<number> {
    const { rows: characters } = await tx.query<Character>(
      `SELECT ${CHARACTER_COLUMNS} FROM characters ORDER BY code`,
    );
    return this.#event(tx, { type: 'full_refresh', characters });
  }

  async count(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: number }>('SELECT count(*)::int AS n FROM characters');
    return rows[0]!.n;
  }
}
