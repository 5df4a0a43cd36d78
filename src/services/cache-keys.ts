import { defineCacheKeys } from '../cache-aside/cache-key.ts';

/**
 * Every cache-aside key of the project, declared once (the seed's `CacheKey`
 * enum). Services build Redis keys only from these.
 */
export const CacheKey = defineCacheKeys({
  /**
   * A user's collection (`GET /api/v1/users/{user_id}/characters`): their
   * grants (character id, acquired_at), joined with the catalog replica at
   * read time, so catalog edits show at once. Invalidated by the grants
   * writer after each commit. No in-process tier: whichever catalog
   * instance consumes a grant invalidates, and only Redis is shared.
   */
  USER_CHARACTERS: { template: 'users:{user_id}:characters', ttlMs: 5 * 60_000, version: 1 },
});
