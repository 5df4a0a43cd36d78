import type { Change } from '../events/event.ts';

/** What reads do while a replica is not `ready` (bus down, or resync failing). */
export type DegradedReadPolicy =
  /** Keep answering from what it holds (stale at most by what the outage hid). */
  | 'serve'
  /** `fetch()` asks the source of truth; synchronous reads serve what it holds. */
  | 'source'
  /** Every read throws REPLICA_UNAVAILABLE: fail closed. */
  | 'refuse';

/**
 * A named dataset: what its events look like and how they map to entries.
 * Values are stored as given; keep them small (1M entries is the design point).
 */
export interface Dataset<V> {
  /** Names the version row/key and labels metrics, e.g. "catalog". */
  readonly name: string;
  /** The fanout exchange its events travel on, e.g. "character.cache". */
  readonly topic: string;
  /** Turns a parsed event object into a change; throws CachecastError EVENT_* on bad input. */
  decode(event: Record<string, unknown>): Change<V>;
  /** Epoch ms after which an entry is gone; undefined for entries that never expire. */
  expireAt?(value: V): number | undefined;
  /** Secondary indexes: name -> the indexed value of an entry (undefined: not indexed). */
  readonly indexes?: Readonly<Record<string, (value: V) => string | undefined>>;
  /** @default 'serve' */
  readonly degradedReads?: DegradedReadPolicy;
  /**
   * Changes commute (independent adds, like revocations): an event past a
   * version gap, or one that arrives while a resync loads, applies at once
   * instead of waiting, and the gap only holds back the version. Several
   * publishers interleave their versions on the wire, so without this every
   * interleaving would delay a revocation. @default false
   */
  readonly commutative?: boolean;
  /**
   * The canonical text of an entry for the content digest (digest.ts): the
   * source of truth hashes exactly this text from its own row or key, so two
   * sides with equal entries have equal digests. Without it the replica
   * compares versions only.
   */
  digestText?(key: string, value: V): string;
  /**
   * The event payload that makes `change` (the inverse of decode): how the
   * in-memory source writes its change log and tests publish.
   */
  encode?(change: Change<V>): Record<string, unknown>;
  /** Larger events are rejected. @default 1 MiB */
  readonly maxEventBytes?: number;
}
