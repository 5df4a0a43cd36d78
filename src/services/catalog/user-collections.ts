import type pg from 'pg';
import type { CacheAside } from '../../cache-aside/cache-aside.ts';
import { CacheKey } from '../../cache-aside/cache-keys.ts';
import type { Character } from '../../datasets/catalog.ts';

/** A character in a user's collection: the Character plus when it was granted (ISO). */
export interface CollectedCharacter extends Character {
  acquired_at: string;
}

/** `GET /api/v1/users/{user_id}/characters`. */
export interface UserCollection {
  user_id: string;
  characters: CollectedCharacter[];
}

/** The seed's "before", and the cache's fallback: the user's grants joined with the catalog, oldest first. */
export const USER_CHARACTERS_SQL = `
  SELECT c.id::text AS id, c.code, c.name, c.match_label, c.type_label, c.dialog, c.is_default,
         g.acquired_at
  FROM character_grants g
  JOIN characters c ON c.id = g.character_id
  WHERE g.user_id = $1
  ORDER BY g.acquired_at, c.code`;

interface Row extends Character {
  acquired_at: Date;
}

/** One PostgreSQL query (indexed on character_grants (user_id, acquired_at)). */
export async function loadUserCharacters(pool: pg.Pool, userId: string): Promise<CollectedCharacter[]> {
  const { rows } = await pool.query<Row>(USER_CHARACTERS_SQL, [userId]);
  return rows.map((r) => ({
    id: r.id,
    code: r.code,
    name: r.name,
    match_label: r.match_label,
    type_label: r.type_label,
    dialog: r.dialog,
    is_default: r.is_default,
    acquired_at: r.acquired_at.toISOString(),
  }));
}

/**
 * Users' collections read through the cache-aside service (seed 003): Redis
 * under `CacheKey.USER_CHARACTERS`, falling back to PostgreSQL. The grants
 * writer calls `invalidate` after each batch commits.
 *
 * Character details are cached with the collection: an admin edit of a
 * character reaches cached collections within the key's TTL (5 minutes).
 */
export class UserCollections {
  readonly #cache: CacheAside;
  readonly #load: (userId: string) => Promise<CollectedCharacter[]>;

  constructor(cache: CacheAside, pool: pg.Pool) {
    this.#cache = cache;
    this.#load = cache.wrap(
      CacheKey.USER_CHARACTERS,
      (userId: string) => ({ user_id: userId }),
      (userId: string) => loadUserCharacters(pool, userId),
    );
  }

  async get(userId: string): Promise<UserCollection> {
    return { user_id: userId, characters: await this.#load(userId) };
  }

  /** After a commit that changed these users' grants. Never throws for a Redis failure. */
  async invalidate(userIds: readonly string[]): Promise<void> {
    await this.#cache.invalidateMany(
      CacheKey.USER_CHARACTERS,
      userIds.map((id) => ({ user_id: id })),
    );
  }
}
