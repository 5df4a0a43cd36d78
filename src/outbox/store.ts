/**
 * What the outbox drainer (drainer.ts) needs of the place where committed
 * events wait for the broker. A writer commits its change and the event
 * together in the store; the drainer publishes the event with a confirm and
 * clears it only after the broker's ack. Two stores implement it:
 * PostgreSQL (postgres-store.ts) and a Redis list (redis-store.ts).
 */

/** A committed event waiting for the broker's confirm. */
export interface OutboxEntry {
  readonly topic: string;
  readonly payload: Record<string, unknown>;
  readonly version: number;
  /** The source's epoch the version belongs to; unknown for entries left by an earlier release. */
  readonly epoch: string | undefined;
}

/** Marks entries sent. Called only with entries the broker has confirmed. */
export type ClearEntries<E extends OutboxEntry> = (sent: readonly E[]) => Promise<void>;

export interface OutboxStore<E extends OutboxEntry = OutboxEntry> {
  /**
   * Hands the oldest pending entries, at most `limit` and in publish order,
   * to `work` with a `clear` for the ones the broker confirmed. Resolves to
   * what `work` resolved to, or 'busy' when another drainer holds this
   * outbox now (it publishes them). When `work` throws, what a transactional
   * store cleared in it is undone.
   */
  batch<T>(
    limit: number,
    work: (entries: readonly E[], clear: ClearEntries<E>) => Promise<T>,
  ): Promise<T | 'busy'>;
  /** Marks entries sent outside a batch (an event published as soon as it committed). */
  clear(sent: readonly E[]): Promise<void>;
  /** Entries committed and not yet cleared. */
  pending(): Promise<number>;
  /** Housekeeping after a pass that left nothing pending (PostgreSQL deletes old sent rows). */
  tidy?(): Promise<void>;
}
