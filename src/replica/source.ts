import type { DigestAlgorithm } from './digest.ts';

/**
 * A snapshot source: the source of truth a replica loads from (on start, on a
 * lost event, on reconnect, on a new epoch, on divergence) and checks itself
 * against. Lives beside the replica that consumes it; adapters in src/sources/
 * (PostgreSQL, Redis, memory), all held to test/conformance/source.conformance.ts.
 *
 * The required part (load, version) is what a minimal source offers; a source
 * that also keeps an epoch and a content digest (`state`, `digestAlgorithm`)
 * lets replicas prove they equal it, and one with a change log
 * (`changesSince`) lets them repair a lost event without a full load.
 */
export interface SnapshotSource<V> {
  /**
   * Streams every entry into `put` and returns the version the data
   * corresponds to. Sources that cannot read data and version atomically must
   * return the version read *before* the data: events newer than it are then
   * replayed over the snapshot, which is harmless because applying an event
   * twice in order gives the same result.
   */
  load(put: (key: string, value: V) => void): Promise<SnapshotResult>;
  /** The source's current version: one cheap query. */
  version(): Promise<number>;
  /**
   * The source's current `(epoch, version, digest)`, read atomically: one
   * cheap query. `fromBucket` limits the digest to entries expiring in that
   * bucket or later (see digest.ts); datasets without expiry ignore it.
   */
  state?(fromBucket: number): Promise<SourceState>;
  /** One entry straight from the source (for the `source` degraded-read policy). */
  get?(key: string): Promise<V | undefined>;
  /**
   * The events after `version` up to the source's current version, from its
   * own log, when the log still holds every one of them in `epoch`;
   * undefined otherwise (the replica then loads a snapshot). Changes too
   * large to hold come as `reload` markers.
   */
  changesSince?(epoch: string, version: number, fromBucket: number): Promise<SourceChanges | undefined>;
  /** How the source hashes entries for its digest; a source without one has no digest. */
  readonly digestAlgorithm?: DigestAlgorithm;
}

export interface SnapshotResult {
  version: number;
  /** The source's epoch ('' or absent: a source without epochs). */
  epoch?: string;
  /**
   * The source's digest per bucket (bucket -> 16 hex digits), as of
   * `atVersion`: equal to `version` for sources that read atomically; later
   * for those that read it after the data (the replica adopts it once it has
   * replayed the events up to that version).
   */
  digest?: { atVersion: number; buckets: Array<[number, string]> };
  /**
   * For non-atomic loads: the source's own changes after `version` up to
   * `digest.atVersion`, from its log. The replica applies these, not the
   * copies of them on the bus, which anyone could have forged.
   */
  changes?: SourceChange[];
}

export interface SourceState {
  epoch: string;
  version: number;
  /** Combined digest (16 hex digits) of the buckets >= the requested one; absent without a digest. */
  digest?: string;
  /** Committed events not yet published, when the source keeps them (the writers' heartbeats report it). */
  pending?: number;
}

export interface SourceChange {
  version: number;
  /** The event payload as published (type and fields; no envelope needed). */
  event: Record<string, unknown>;
}

export interface SourceChanges {
  epoch: string;
  /** In version order, contiguous from the requested version + 1. */
  changes: SourceChange[];
  /** The state after the last change, read with them (digest of the buckets >= fromBucket). */
  state?: SourceState;
}
