import { z } from 'zod';
import { CachecastError } from '../errors.ts';
import { RELOAD_TYPE } from '../events/control.ts';
import type { Change } from '../events/event.ts';
import type { Dataset } from '../replica/dataset.ts';

/** The catalog's dataset name: its replica, its source, its outbox rows and its version row. */
export const CATALOG_DATASET = 'catalog';

/** The `characters` columns selected as exactly the Character fields (reads and RETURNING clauses). */
export const CHARACTER_COLUMNS = 'id::text AS id, code, name, match_label, type_label, dialog, is_default';

/** The seed 000 Character, as it travels on `character.cache`. Unknown fields are dropped. */
export interface Character {
  id: string;
  code: string;
  name: string;
  match_label: string;
  type_label: string | null;
  dialog: string | null;
  /** Absent on the wire means false (the seed's publisher never sends it). */
  is_default: boolean;
}

const text = z.string().max(10_000);
export const characterSchema = z.object({
  id: z.string().min(1).max(200),
  code: z.string().min(1).max(200),
  name: text,
  match_label: text,
  // The seed fills these from a metadata dict, so they may be null.
  type_label: text
    .nullable()
    .optional()
    .transform((v) => v ?? null),
  dialog: text
    .nullable()
    .optional()
    .transform((v) => v ?? null),
  is_default: z
    .boolean()
    .optional()
    .transform((v) => v ?? false),
});

function parseCharacter(value: unknown, where: string): Character {
  const result = characterSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue?.path.join('.') ?? '';
    throw new CachecastError(
      'EVENT_BAD_SHAPE',
      `${where}${path ? `.${path}` : ''}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return result.data;
}

export const CATALOG_TOPIC = 'character.cache';

/** A text field for the digest: its UTF-8 length and itself, or `~` for null (unambiguous, no escaping). */
function digestField(value: string | null): string {
  return value === null ? '~' : `${Buffer.byteLength(value, 'utf8')}:${value}`;
}

/**
 * The digest text of a character: exactly what the PostgreSQL trigger hashes
 * from its row (cachecast_character_text in db/migrations.ts).
 */
export function characterDigestText(c: Character): string {
  const fields = [c.id, c.code, c.name, c.match_label, c.type_label, c.dialog].map(digestField);
  return `${fields.join('|')}|${c.is_default ? 't' : 'f'}`;
}

/** The character catalog (seed 000): keyed by id, indexed by match_label and code. */
export const catalogDataset: Dataset<Character> = {
  name: CATALOG_DATASET,
  topic: CATALOG_TOPIC,
  degradedReads: 'serve',
  // A full_refresh carries the whole catalog; 100k characters fit in 64 MiB.
  maxEventBytes: 64 * 1024 * 1024,
  indexes: {
    match_label: (c) => c.match_label,
    code: (c) => c.code,
    default: (c) => (c.is_default ? 'default' : undefined),
  },
  digestText: (_id, c) => characterDigestText(c),
  encode(change) {
    switch (change.kind) {
      case 'set':
        return { type: 'upsert', character: change.value };
      case 'delete':
        return { type: 'delete', character_id: change.key };
      case 'replace':
        return { type: 'full_refresh', characters: change.entries.map(([, c]) => c) };
      case 'reload':
        return { type: RELOAD_TYPE };
    }
  },
  decode(event): Change<Character> {
    switch (event.type) {
      case 'full_refresh': {
        if (!Array.isArray(event.characters)) {
          throw new CachecastError('EVENT_BAD_SHAPE', 'full_refresh needs a "characters" array');
        }
        const entries = event.characters.map((c, i): [string, Character] => {
          const character = parseCharacter(c, `characters[${i}]`);
          return [character.id, character];
        });
        return { kind: 'replace', entries };
      }
      case 'upsert': {
        const character = parseCharacter(event.character, 'character');
        return { kind: 'set', key: character.id, value: character };
      }
      case 'delete': {
        const id = event.character_id;
        if (typeof id !== 'string' || id.length === 0 || id.length > 200) {
          throw new CachecastError('EVENT_BAD_SHAPE', 'delete needs a string "character_id"');
        }
        return { kind: 'delete', key: id };
      }
      default:
        throw new CachecastError(
          'EVENT_UNKNOWN_TYPE',
          `unknown catalog event type ${JSON.stringify(event.type)}`,
        );
    }
  },
};
