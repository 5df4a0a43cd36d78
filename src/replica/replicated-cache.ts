import type { Clock } from '../clock.ts';
import { CachecastError, describeError } from '../errors.ts';
import type { ReplicatedCacheOptions, ResolvedReplicaOptions } from './options.ts';
import { normalizeReplicaOptions } from './options.ts';
import { Replicator } from './replicator.ts';
import type { ResyncReason } from './resync.ts';
import type { ReplicaState, ReplicaStats } from './stats.ts';

export type { ReplicaState, ReplicaStats } from './stats.ts';

/**
 * A named dataset held in memory and kept equal to its source of truth.
 *
 * Reads are synchronous Map lookups on the serving generation; everything
 * that keeps it current (events ordered by version, resyncs, repairs, the
 * proof that it equals its source within `maxStalenessMs`, expiry) is the
 * Replicator's. See docs/design.md, "The sync protocol".
 */
export class ReplicatedCache<V> {
  readonly #o: ResolvedReplicaOptions<V>;
  readonly #sync: Replicator<V>;
  readonly #expireAt: ((value: V) => number | undefined) | undefined;
  readonly #clock: Clock;

  constructor(options: ReplicatedCacheOptions<V>) {
    this.#o = normalizeReplicaOptions(options);
    this.#clock = this.#o.clock;
    this.#expireAt = this.#o.dataset.expireAt?.bind(this.#o.dataset);
    this.#sync = new Replicator(this.#o, (value) => this.#live(value));
  }

  get dataset(): string {
    return this.#o.dataset.name;
  }

  /** `syncing`, `ready` (proven equal to its source within the bound) or `degraded`. */
  get state(): ReplicaState {
    return this.#sync.state;
  }

  get version(): number {
    return this.#sync.version;
  }

  get epoch(): string {
    return this.#sync.epoch;
  }

  /**
   * Whether reads can be answered: a snapshot has loaded, and the replica is
   * ready or its policy lets it answer while degraded. Readiness probes use
   * this, so a broker outage does not pull every pod out of service at once,
   * while a fail-closed (`refuse`) replica does leave the load balancer.
   */
  get canServe(): boolean {
    return this.#sync.canServe;
  }

  /**
   * Synced, on the bus since its last resync, and repairing nothing: it has
   * every event that reached it, and only a recent proof of equality may be
   * missing (its source cannot be read). A caller whose own fallback to the
   * source fails too may still trust it more than nothing: while the source
   * is unreachable, nobody can commit a change to it either.
   */
  get following(): boolean {
    return this.#sync.following;
  }

  /** Entries held, including expired ones not yet swept. */
  get size(): number {
    return this.#sync.serving?.store.size ?? 0;
  }

  // ---------------------------------------------------------------- reads

  get(key: string): V | undefined {
    const sync = this.#sync;
    if (sync.refuseReads) this.#unavailable();
    const value = sync.serving?.store.get(key);
    if (value === undefined || this.#expireAt === undefined) return value;
    return this.#live(value) ? value : undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Every live value (a copy). */
  values(): V[] {
    return this.entries().map(([, value]) => value);
  }

  /** Every live entry as [key, value] (a copy). */
  entries(): Array<[string, V]> {
    if (this.#sync.refuseReads) this.#unavailable();
    const out: Array<[string, V]> = [];
    const store = this.#sync.serving?.store;
    if (store) for (const entry of store.entries()) if (this.#live(entry[1])) out.push(entry);
    return out;
  }

  /** The live values whose index `index` has the term `term`. */
  findAll(index: string, term: string): V[] {
    const out: V[] = [];
    this.#eachIndexed(index, term, (value) => {
      out.push(value);
      return false;
    });
    return out;
  }

  /** One live value with that index term (the first indexed), or undefined. O(1). */
  findOne(index: string, term: string): V | undefined {
    let found: V | undefined;
    this.#eachIndexed(index, term, (value) => {
      found = value;
      return true;
    });
    return found;
  }

  #eachIndexed(index: string, term: string, visit: (value: V) => boolean): void {
    if (this.#sync.refuseReads) this.#unavailable();
    if (!this.#o.dataset.indexes?.[index]) {
      throw new CachecastError('REPLICA_UNKNOWN_INDEX', `dataset ${this.dataset} has no index ${index}`);
    }
    const store = this.#sync.serving?.store;
    const keys = store?.byIndex(index, term);
    if (!store || !keys) return;
    for (const key of keys) {
      const value = store.get(key);
      if (value !== undefined && this.#live(value) && visit(value)) return;
    }
  }

  /**
   * A read that honours the `source` policy: while the replica is not ready it
   * asks the source of truth (falling back to local data if the source fails).
   */
  async fetch(key: string): Promise<V | undefined> {
    if (this.state !== 'ready' && this.#o.degradedReads === 'source' && this.#o.source.get) {
      try {
        const value = await this.#o.source.get(key);
        return value !== undefined && this.#live(value) ? value : undefined;
      } catch (err) {
        throw new CachecastError('SOURCE_FAILED', `source read failed: ${describeError(err)}`, {
          cause: err,
        });
      }
    }
    return this.get(key);
  }

  #live(value: V): boolean {
    if (this.#expireAt === undefined) return true;
    const at = this.#expireAt(value);
    return at === undefined || at > this.#clock.now();
  }

  #unavailable(): never {
    throw new CachecastError('REPLICA_UNAVAILABLE', `replica ${this.dataset} is ${this.#sync.state}`);
  }

  // ---------------------------------------------------------------- lifecycle and sync

  /** Subscribes, loads the first snapshot; resolves once the replica has synced. Idempotent. */
  start(): Promise<void> {
    return this.#sync.start();
  }

  /** Resolves when the first snapshot has loaded. */
  whenSynced(): Promise<void> {
    return this.#sync.whenSynced();
  }

  onStateChange(listener: (state: ReplicaState) => void): () => void {
    return this.#sync.onStateChange(listener);
  }

  /** Stops timers and the subscription (waiting for the event in flight). Idempotent. */
  close(): Promise<void> {
    return this.#sync.close();
  }

  /** Reloads from the source; concurrent calls share one run (single-flight). */
  resync(reason: ResyncReason = 'manual'): Promise<void> {
    return this.#sync.resync(reason);
  }

  /**
   * Reads the source's state now and repairs what it shows (behind, ahead,
   * another epoch, different content). Returns true when a repair started.
   */
  checkVersion(): Promise<boolean> {
    return this.#sync.checkVersion();
  }

  /** Frees up to `sweepBatch` expired entries, resuming where the last call stopped. Returns how many. */
  sweep(): number {
    return this.#sync.sweep();
  }

  stats(): ReplicaStats {
    return this.#sync.stats();
  }
}
