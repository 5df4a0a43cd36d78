import type pg from 'pg';
import type { CacheAside } from '../../cache-aside/cache-aside.ts';
import { CacheKey } from '../cache-keys.ts';
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

/** What is cached per user: the grants alone, oldest first. */
export interface GrantRef {
  character_id: string;
  acquired_at: string;
}

/** Looks up a character by id: the catalog replica, in memory. */
export interface CharacterLookup {
  get(id: string): Character | undefined;
}

/** The seed's "before" (a query per read, details joined in SQL), kept as the benchmark baseline. */
export const USER_CHARACTERS_SQL = `
  SELECT c.id::text AS id, c.code, c.name, c.match_label, c.type_label, c.dialog, c.is_default,
         g.acquired_at
  FROM character_grants g
  JOIN characters c ON c.id = g.character_id
  WHERE g.user_id = $1
  ORDER BY g.acquired_at, c.code`;

/** The cache's fallback: one indexed query on character_grants (user_id, acquired_at). */
export const USER_GRANTS_SQL = `
  SELECT character_id::text AS character_id, acquired_at
  FROM character_grants
  WHERE user_id = $1
  ORDER BY acquired_at, character_id`;

interface Row extends Character {
  acquired_at: Date;
}

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

export async function loadUserGrants(pool: pg.Pool, userId: string): Promise<GrantRef[]> {
  const { rows } = await pool.query<{ character_id: string; acquired_at: Date }>(USER_GRANTS_SQL, [userId]);
  return rows.map((r) => ({ character_id: r.character_id, acquired_at: r.acquired_at.toISOString() }));
}

/**
 * Joins grants with the catalog as it is now: a character edited since the
 * grants were cached shows its new details, and a deleted one (or one the
 * replica has not received yet) is left out, as the SQL join leaves out a
 * deleted one. Oldest first at the millisecond the answer shows, then by code
 * in code-point order (the SQL baseline sorts codes by the database's
 * collation, which agrees for the catalog's codes).
 */
export function joinGrants(grants: readonly GrantRef[], catalog: CharacterLookup): CollectedCharacter[] {
  const out: CollectedCharacter[] = [];
  for (const g of grants) {
    const character = catalog.get(g.character_id);
    if (character) out.push({ ...character, acquired_at: g.acquired_at });
  }
  // ISO strings of one format compare as their instants.
  return out.sort((a, b) =>
    a.acquired_at !== b.acquired_at
      ? a.acquired_at < b.acquired_at
        ? -1
        : 1
      : a.code < b.code
        ? -1
        : a.code > b.code
          ? 1
          : 0,
  );
}

/**
 * Users' collections read through the cache-aside service (seed 003): the
 * grants in Redis under `CacheKey.USER_CHARACTERS`, falling back to
 * PostgreSQL; the grants writer calls `invalidate` after each batch commits.
 *
 * Only grants are cached; character details come from the catalog replica at
 * read time. The seed cached the joined rows, so an admin edit of a character
 * stayed hidden behind every cached collection until the TTL; here it shows
 * as soon as the replica applies it.
 */
export class UserCollections {
  readonly #cache: CacheAside;
  readonly #catalog: CharacterLookup;
  readonly #load: (userId: string) => Promise<GrantRef[]>;

  constructor(cache: CacheAside, pool: pg.Pool, catalog: CharacterLookup) {
    this.#cache = cache;
    this.#catalog = catalog;
    this.#load = cache.wrap(
      CacheKey.USER_CHARACTERS,
      (userId: string) => ({ user_id: userId }),
      (userId: string) => loadUserGrants(pool, userId),
    );
  }

  async get(userId: string): Promise<UserCollection> {
    return { user_id: userId, characters: joinGrants(await this.#load(userId), this.#catalog) };
  }

  /** After a commit that changed these users' grants. Never throws for a Redis failure. */
  async invalidate(userIds: readonly string[]): Promise<void> {
    await this.#cache.invalidateMany(
      CacheKey.USER_CHARACTERS,
      userIds.map((id) => ({ user_id: id })),
    );
  }
}
