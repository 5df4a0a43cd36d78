import type pg from 'pg';
import type { Character } from '../../src/datasets/catalog.ts';
import { CATALOG_TOPIC } from '../../src/datasets/catalog.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { appendToOutbox } from '../../src/outbox/outbox.ts';

/** Writes as the catalog service does: the row and its outbox event in one transaction. */
export function upsertCharacter(pool: pg.Pool, c: Character, topic = CATALOG_TOPIC): Promise<number> {
  return withTransaction(pool, async (tx) => {
    await tx.query(
      `INSERT INTO characters (id, code, name, match_label, type_label, dialog, is_default)
       VALUES ($1,$2,$3,$4,$5,$6,$7)
       ON CONFLICT (id) DO UPDATE SET code = $2, name = $3, match_label = $4, type_label = $5,
         dialog = $6, is_default = $7, updated_at = now()`,
      [c.id, c.code, c.name, c.match_label, c.type_label, c.dialog, c.is_default],
    );
    return appendToOutbox(tx, { dataset: 'catalog', topic, payload: { type: 'upsert', character: c } });
  });
}

export function deleteCharacter(pool: pg.Pool, id: string, topic = CATALOG_TOPIC): Promise<number> {
  return withTransaction(pool, async (tx) => {
    await tx.query('DELETE FROM characters WHERE id = $1', [id]);
    return appendToOutbox(tx, { dataset: 'catalog', topic, payload: { type: 'delete', character_id: id } });
  });
}
