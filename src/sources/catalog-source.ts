import type pg from 'pg';
import type { Character } from '../datasets/catalog.ts';
import { CATALOG_DATASET, CHARACTER_COLUMNS } from '../datasets/catalog.ts';
import { PostgresSource } from './postgres-source.ts';

/** The character catalog's source of truth: the `characters` table. */
export function catalogSource(pool: pg.Pool): PostgresSource<Character, Character> {
  // Selected as exactly the Character fields, so a row is a Character.
  return new PostgresSource<Character, Character>({
    pool,
    dataset: CATALOG_DATASET,
    selectAll: `SELECT ${CHARACTER_COLUMNS} FROM characters ORDER BY code`,
    selectOne: `SELECT ${CHARACTER_COLUMNS} FROM characters WHERE id::text = $1`,
    toEntry: (row) => [row.id, row],
    // The characters table keeps its digest with a trigger (db/migrations.ts).
    digest: true,
  });
}
