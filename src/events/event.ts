/**
 * The fields every cachecast event may carry beside its payload. The seed's
 * Python publisher sends none of them, so all are optional on the way in.
 */
export interface EventEnvelope {
  /** Per-dataset version, +1 per change, gapless and in commit order. */
  version?: number;
  /** Epoch milliseconds when the event was published (for lag). */
  published_at?: number;
  /** The publishing instance. */
  origin?: string;
}

/** What one event does to a dataset's entries. */
export type Change<V> =
  | { kind: 'replace'; entries: Array<[string, V]> }
  | { kind: 'set'; key: string; value: V }
  | { kind: 'delete'; key: string };

export interface DecodedEvent<V> extends EventEnvelope {
  type: string;
  change: Change<V>;
}
