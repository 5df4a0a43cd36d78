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
