import { z } from 'zod';
import { CachecastError } from '../errors.ts';
import type { Change } from '../events/event.ts';
import type { Dataset } from '../replica/dataset.ts';

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

/** The character catalog (seed 000): keyed by id, indexed by match_label and code. */
export const catalogDataset: Dataset<Character> = {
  name: 'catalog',
  topic: CATALOG_TOPIC,
  degradedReads: 'serve',
  // A full_refresh carries the whole catalog; 100k characters fit in 64 MiB.
  maxEventBytes: 64 * 1024 * 1024,
  indexes: {
    match_label: (c) => c.match_label,
    code: (c) => c.code,
    default: (c) => (c.is_default ? 'default' : undefined),
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
