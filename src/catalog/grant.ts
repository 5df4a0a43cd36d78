import { isWellFormedText } from '../util/text.ts';

/** Queue the match worker publishes grants to and the catalog service's grants writer consumes. */
export const GRANTS_QUEUE = 'character.grants';

/** One grant message (JSON, persistent, on the durable queue `character.grants`). */
export interface GrantMessage {
  user_id: string;
  character_id: string;
  character_code: string;
  /** The Celery task that matched it (for tracing; the grant id does not depend on it). */
  task_id: string;
  /** ISO time of the match. */
  granted_at: string;
}

/**
 * Why `userId` cannot be stored as a grant's user, or undefined when it can.
 * Checked at both edges (the match worker's task, the grants writer's
 * message): a value PostgreSQL refuses would fail its whole batch.
 */
export function grantUserIdProblem(userId: string): string | undefined {
  // PostgreSQL's text type cannot hold U+0000 (22021 invalid byte sequence).
  if (userId.includes('\u0000')) return 'holds a NUL character, which PostgreSQL cannot store';
  // JSON can carry "\ud800": it has no UTF-8 form (PostgreSQL would store U+FFFD) and builds no cache key.
  if (!isWellFormedText(userId)) return 'is not well-formed UTF-16 (a lone surrogate)';
  return undefined;
}

/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the grant times PostgreSQL stores as sent. */
const FIRST_GRANT_TIME = -62_135_596_800_000;
const LAST_GRANT_TIME = 253_402_300_799_999;

/**
 * An ISO 8601 time with an offset as UTC (`...Z`), or undefined when it lies
 * outside the years 1 to 9999. PostgreSQL refuses year 0 and offsets past
 * ±15:59, which an ISO validator accepts; written as UTC, neither reaches it.
 */
export function grantTimeAsUtc(isoTime: string): string | undefined {
  const at = Date.parse(isoTime);
  if (!Number.isFinite(at) || at < FIRST_GRANT_TIME || at > LAST_GRANT_TIME) return undefined;
  return new Date(at).toISOString();
}
