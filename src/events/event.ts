/**
 * The fields every cachecast event may carry beside its payload. The seed's
 * Python publisher sends none of them, so all are optional on the way in.
 */
export interface EventEnvelope {
  /** Per-dataset version, +1 per change, gapless and in commit order. */
  version?: number;
  /**
   * The source's epoch: a random id created with its version counter. A new
   * epoch (the source was reset, restored or lost writes) restarts versions,
   * so versions of two epochs are never compared.
   */
  epoch?: string;
  /** Epoch milliseconds when the event was published (for lag). */
  published_at?: number;
  /** The publishing instance. */
  origin?: string;
}

/** What one event does to a dataset's entries. */
export type Change<V> =
  | { kind: 'replace'; entries: Array<[string, V]> }
  | { kind: 'set'; key: string; value: V }
  | { kind: 'delete'; key: string }
  /** The change was too large to send: load the source at (at least) the event's version. */
  | { kind: 'reload' };

export interface DecodedEvent<V> extends EventEnvelope {
  type: string;
  change: Change<V>;
}
