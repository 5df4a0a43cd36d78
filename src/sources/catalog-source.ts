import type pg from 'pg';
import type { Character } from '../datasets/catalog.ts';
import { PostgresSource } from './postgres-source.ts';

export interface CharacterRow {
  id: string;
  code: string;
  name: string;
  match_label: string;
  type_label: string | null;
  dialog: string | null;
  is_default: boolean;
}

export const CHARACTER_COLUMNS = 'id::text AS id, code, name, match_label, type_label, dialog, is_default';

export function rowToCharacter(row: CharacterRow): Character {
  return {
    id: row.id,
    code: row.code,
    name: row.name,
    match_label: row.match_label,
    type_label: row.type_label,
    dialog: row.dialog,
    is_default: row.is_default,
  };
}

/** The character catalog's source of truth: the `characters` table. */
export function catalogSource(pool: pg.Pool): PostgresSource<Character, CharacterRow> {
  return new PostgresSource<Character, CharacterRow>({
    pool,
    dataset: 'catalog',
    selectAll: `SELECT ${CHARACTER_COLUMNS} FROM characters ORDER BY code`,
    selectOne: `SELECT ${CHARACTER_COLUMNS} FROM characters WHERE id::text = $1`,
    toEntry: (row) => [row.id, rowToCharacter(row)],
  });
}
