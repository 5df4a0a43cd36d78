/**
 * A snapshot source: the source of truth a replica loads from on start, on a
 * gap, on reconnect and when the periodic version check finds it behind.
 * Adapters: PostgreSQL (postgres-source.ts), Redis (redis-source.ts), memory.
 * All pass test/conformance/source.conformance.ts.
 */
export interface SnapshotSource<V> {
  /**
   * Streams every entry into `put` and returns the version the data
   * corresponds to. Sources that cannot read data and version atomically must
   * return the version read *before* the data: events newer than it are then
   * replayed over the snapshot, which is harmless because applying an event
   * twice in order gives the same result.
   */
  load(put: (key: string, value: V) => void): Promise<{ version: number }>;
  /** The source's current version: one cheap query. */
  version(): Promise<number>;
  /** One entry straight from the source (for the `source` degraded-read policy). */
  get?(key: string): Promise<V | undefined>;
}
