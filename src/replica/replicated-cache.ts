import type { BusMessage, Subscription } from '../bus/bus.ts';
import type { TimerHandle } from '../clock.ts';
import { CachecastError, describeError, isCachecastError } from '../errors.ts';
import { parseEventMessage } from '../events/codec.ts';
import type { Change, DecodedEvent } from '../events/event.ts';
import { backoffDelay } from '../util/backoff.ts';
import { deferred } from '../util/deferred.ts';
import { Pauses } from '../util/pauses.ts';
import type { ReplicatedCacheOptions, ResolvedReplicaOptions } from './options.ts';
import { normalizeReplicaOptions } from './options.ts';
import { Store } from './store.ts';

export type ReplicaState = 'syncing' | 'ready' | 'degraded';

export interface ReplicaStats {
  dataset: string;
  state: ReplicaState;
  version: number;
  size: number;
  /** ISO time of the last applied event, or null. */
  last_event_at: string | null;
  /** now - published_at of the last applied event that carried one. */
  lag_ms: number | null;
  events_applied: number;
  events_rejected: number;
  events_duplicate: number;
  gaps: number;
  resyncs: number;
  resync_failures: number;
  last_resync_at: string | null;
  last_resync_reason: string | null;
  degraded_read_policy: string;
  bus_connected: boolean;
  rejected_by_code: Record<string, number>;
}

type ResyncReason = 'start' | 'gap' | 'reconnect' | 'behind' | 'buffer-overflow' | 'manual';

/**
 * A named dataset held in memory and kept equal to its source of truth.
 *
 * Sync protocol: subscribe first and buffer, load the snapshot with its
 * version, apply the buffered events newer than it, swap the new generation in
 * atomically. Versioned events then apply when v == local+1, are duplicates
 * when v <= local, and reveal a gap (-> resync) when v > local+1. Events
 * without a version (foreign publishers) apply as they come. A reconnect
 * resyncs; a periodic version check resyncs a replica found behind.
 *
 * Reads are synchronous Map lookups.
 */
export class ReplicatedCache<V> {
  readonly #o: ResolvedReplicaOptions<V>;
  readonly #expireAt: ((value: V) => number | undefined) | undefined;
  #store: Store<V>;
  #version = 0;

  // state inputs
  #synced = false;
  #busUp = false;
  #sourceFailing = false;
  /** Set when the bus went down: events may have been missed until a resync that starts with the bus up. */
  #missedEvents = false;
  #state: ReplicaState = 'syncing';
  #refuseReads = true;

  // resync machinery
  #resyncing: Promise<void> | undefined;
  #resyncAgain: ResyncReason | undefined;
  #buffer: Array<DecodedEvent<V>> | undefined;
  #bufferOverflowed = false;
  /** Events past a version gap, waiting up to gapWaitMs for the missing versions. */
  readonly #held = new Map<number, DecodedEvent<V>>();
  #gapTimer: TimerHandle | undefined;
  readonly #firstSync = deferred<void>();

  // lifecycle
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #subscription: Subscription | undefined;
  #unlistenBus: (() => void) | undefined;
  #versionTimer: TimerHandle | undefined;
  #sweepTimer: TimerHandle | undefined;
  readonly #pauses: Pauses;
  #sweepIterator: Iterator<[string, V]> | undefined;
  #sweepStore: Store<V> | undefined;

  // stats
  #applied = 0;
  #rejected = 0;
  #duplicates = 0;
  #gaps = 0;
  #resyncs = 0;
  #resyncFailures = 0;
  #lastEventAt: number | null = null;
  #lagMs: number | null = null;
  #lastResyncAt: number | null = null;
  #lastResyncReason: ResyncReason | null = null;
  readonly #rejectedByCode: Record<string, number> = {};
  readonly #stateListeners = new Set<(state: ReplicaState) => void>();

  constructor(options: ReplicatedCacheOptions<V>) {
    this.#o = normalizeReplicaOptions(options);
    this.#pauses = new Pauses(this.#o.clock);
    this.#expireAt = this.#o.dataset.expireAt?.bind(this.#o.dataset);
    this.#store = new Store(this.#o.dataset);
    // Readers of a replica that has never synced get nothing, whatever the policy.
    this.#refuseReads = this.#o.degradedReads === 'refuse';
  }

  get dataset(): string {
    return this.#o.dataset.name;
  }

  get state(): ReplicaState {
    return this.#state;
  }

  get version(): number {
    return this.#version;
  }

  /**
   * Whether reads can be answered: a snapshot has loaded, and the replica is
   * ready or its policy lets it answer while degraded. Readiness probes use
   * this, so a broker outage does not pull every pod out of service at once,
   * while a fail-closed (`refuse`) replica does leave the load balancer.
   */
  get canServe(): boolean {
    return this.#synced && !this.#refuseReads;
  }

  /** Entries held, including expired ones not yet swept. */
  get size(): number {
    return this.#store.entries.size;
  }

  // ---------------------------------------------------------------- reads

  get(key: string): V | undefined {
    if (this.#refuseReads) this.#unavailable();
    const value = this.#store.entries.get(key);
    if (value === undefined || this.#expireAt === undefined) return value;
    return this.#live(value) ? value : undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Every live value (a copy). */
  values(): V[] {
    if (this.#refuseReads) this.#unavailable();
    const out: V[] = [];
    for (const value of this.#store.entries.values()) if (this.#live(value)) out.push(value);
    return out;
  }

  /** The live values whose index `index` has the term `term`. */
  findAll(index: string, term: string): V[] {
    if (this.#refuseReads) this.#unavailable();
    const keys = this.#index(index).get(term);
    if (!keys) return [];
    const out: V[] = [];
    for (const key of keys) {
      const value = this.#store.entries.get(key);
      if (value !== undefined && this.#live(value)) out.push(value);
    }
    return out;
  }

  /** One live value with that index term (the first indexed), or undefined. O(1). */
  findOne(index: string, term: string): V | undefined {
    if (this.#refuseReads) this.#unavailable();
    const keys = this.#index(index).get(term);
    if (!keys) return undefined;
    for (const key of keys) {
      const value = this.#store.entries.get(key);
      if (value !== undefined && this.#live(value)) return value;
    }
    return undefined;
  }

  /**
   * A read that honours the `source` policy: while the replica is not ready it
   * asks the source of truth (falling back to local data if the source fails).
   */
  async fetch(key: string): Promise<V | undefined> {
    if (this.#state !== 'ready' && this.#o.degradedReads === 'source' && this.#o.source.get) {
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
    return at === undefined || at > this.#o.clock.now();
  }

  #index(name: string): Map<string, Set<string>> {
    const index = this.#store.indexes.get(name);
    if (!index)
      throw new CachecastError('REPLICA_UNKNOWN_INDEX', `dataset ${this.dataset} has no index ${name}`);
    return index;
  }

  #unavailable(): never {
    throw new CachecastError('REPLICA_UNAVAILABLE', `replica ${this.dataset} is ${this.#state}`);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Subscribes, loads the first snapshot; resolves once the replica is ready. Idempotent. */
  start(): Promise<void> {
    this.#starting ??= (async () => {
      if (this.#closing) throw new CachecastError('REPLICA_CLOSED', 'replica is closed');
      const { bus, dataset } = this.#o;
      this.#unlistenBus = bus.onStateChange((state) => {
        if (state === 'down' || state === 'closed') this.#onBusDown();
      });
      let subscribed = false;
      this.#subscription = await bus.subscribe(dataset.topic, (m) => this.#onMessage(m), {
        onReady: () => {
          this.#busUp = true;
          if (subscribed) void this.resync('reconnect');
          subscribed = true;
          this.#updateState();
        },
        onError: (err) => this.#o.logger.warn({ err: describeError(err) }, 'subscription error'),
      });
      this.#busUp = bus.state === 'up';
      void this.resync('start');
      await this.#firstSync.promise;
      this.#scheduleVersionCheck();
      this.#scheduleSweep();
    })();
    return this.#starting;
  }

  /** Resolves when the first snapshot has loaded. */
  whenSynced(): Promise<void> {
    return this.#firstSync.promise;
  }

  onStateChange(listener: (state: ReplicaState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** Stops timers and the subscription (waiting for the event in flight). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#unlistenBus?.();
      if (this.#versionTimer) this.#o.clock.clearTimeout(this.#versionTimer);
      if (this.#sweepTimer) this.#o.clock.clearTimeout(this.#sweepTimer);
      this.#clearGapTimer();
      this.#pauses.stop();
      this.#firstSync.reject(new CachecastError('REPLICA_CLOSED', 'replica closed before it synced'));
      this.#firstSync.promise.catch(() => undefined);
      await this.#subscription?.close();
      await this.#resyncing?.catch(() => undefined);
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------- events

  #onMessage(message: BusMessage): void {
    let event: DecodedEvent<V>;
    try {
      const parsed = parseEventMessage(message, {
        maxBytes: this.#o.maxEventBytes,
        secret: this.#o.eventSecret,
      });
      // Keep only what ordering needs: the raw payload is not held in buffers.
      event = {
        type: parsed.type,
        version: parsed.version,
        published_at: parsed.published_at,
        change: this.#o.dataset.decode(parsed),
      };
    } catch (err) {
      this.#reject(err);
      return;
    }
    if (this.#buffer) {
      if (this.#buffer.length >= this.#o.maxBufferedEvents) {
        this.#buffer = [];
        this.#bufferOverflowed = true;
      }
      this.#buffer.push(event);
      // The serving generation stays current while the next one loads (a revocation
      // must not wait seconds for a 1M-key snapshot); the buffer still feeds the next.
      if (
        this.#synced &&
        this.#o.dataset.commutative &&
        (event.version === undefined || event.version > this.#version)
      ) {
        this.#applyChange(this.#store, event.change, true);
      }
      return;
    }
    this.#applyLive(event);
  }

  #reject(err: unknown): void {
    const code = isCachecastError(err) ? err.code : 'EVENT_BAD_SHAPE';
    this.#rejected++;
    this.#rejectedByCode[code] = (this.#rejectedByCode[code] ?? 0) + 1;
    this.#o.logger.warn({ code, err: describeError(err) }, 'event rejected');
  }

  #applyLive(event: DecodedEvent<V>): void {
    const { version } = event;
    const commutative = this.#o.dataset.commutative === true;
    if (version !== undefined) {
      if (version <= this.#version || this.#held.has(version)) {
        this.#duplicates++;
        return;
      }
      if (version !== this.#version + 1) {
        // Usually another publisher's event still in flight: wait for it a moment.
        this.#held.set(version, event);
        if (commutative) {
          this.#applyChange(this.#store, event.change, true);
          this.#noteApplied(event);
        }
        this.#armGapTimer();
        return;
      }
      this.#version = version;
    }
    this.#applyChange(this.#store, event.change, true);
    this.#noteApplied(event);
    this.#releaseHeld();
  }

  /** Applies held events that are now next in line; commutative ones were applied on arrival. */
  #releaseHeld(): void {
    if (this.#held.size === 0) return;
    for (const version of [...this.#held.keys()]) if (version <= this.#version) this.#held.delete(version);
    let next = this.#held.get(this.#version + 1);
    while (next) {
      this.#held.delete(this.#version + 1);
      this.#version++;
      if (!this.#o.dataset.commutative) {
        this.#applyChange(this.#store, next.change, true);
        this.#noteApplied(next);
      }
      next = this.#held.get(this.#version + 1);
    }
    if (this.#held.size === 0) this.#clearGapTimer();
  }

  #armGapTimer(): void {
    if (this.#gapTimer) return;
    this.#gapTimer = this.#o.clock.setTimeout(() => {
      this.#gapTimer = undefined;
      this.#onGapExpired();
    }, this.#o.gapWaitMs);
    this.#gapTimer.unref?.();
  }

  #clearGapTimer(): void {
    if (this.#gapTimer) this.#o.clock.clearTimeout(this.#gapTimer);
    this.#gapTimer = undefined;
  }

  #onGapExpired(): void {
    if (this.#held.size === 0 || this.#closing) return;
    this.#gaps++;
    const held = [...this.#held.values()].sort((a, b) => (a.version ?? 0) - (b.version ?? 0));
    this.#held.clear();
    this.#o.logger.warn(
      { local: this.#version, received: held[0]?.version, waitedMs: this.#o.gapWaitMs },
      'version gap, resyncing',
    );
    void this.resync('gap');
    // The resync has started buffering; these events may be newer than its snapshot.
    this.#buffer?.push(...held);
  }

  #noteApplied(event: DecodedEvent<V>): void {
    this.#applied++;
    const now = this.#o.clock.now();
    this.#lastEventAt = now;
    if (event.published_at !== undefined) this.#lagMs = Math.max(0, now - event.published_at);
  }

  #applyChange(store: Store<V>, change: Change<V>, live: boolean): void {
    switch (change.kind) {
      case 'set':
        store.set(change.key, change.value);
        break;
      case 'delete':
        store.delete(change.key);
        break;
      case 'replace': {
        if (live) {
          // Build the new generation aside and swap it in: no half-replaced reads.
          const next = new Store(this.#o.dataset);
          for (const [k, v] of change.entries) next.set(k, v);
          this.#store = next;
        } else {
          store.entries.clear();
          for (const index of store.indexes.values()) index.clear();
          for (const [k, v] of change.entries) store.set(k, v);
        }
        break;
      }
    }
  }

  // ---------------------------------------------------------------- resync

  /** Reloads from the source; concurrent calls share one run (single-flight). */
  resync(reason: ResyncReason = 'manual'): Promise<void> {
    if (this.#closing) return Promise.resolve();
    if (this.#resyncing) {
      this.#resyncAgain ??= reason;
      return this.#resyncing;
    }
    this.#resyncing = this.#runResync(reason).finally(() => {
      this.#resyncing = undefined;
    });
    return this.#resyncing;
  }

  async #runResync(firstReason: ResyncReason): Promise<void> {
    let reason: ResyncReason = firstReason;
    let failures = 0;
    while (!this.#closing) {
      this.#resyncAgain = undefined;
      // Every event received before the load reads the version is covered by the snapshot.
      this.#buffer = [];
      this.#bufferOverflowed = false;
      const startedWithBusUp = this.#busUp;
      try {
        const next = new Store(this.#o.dataset);
        const { version } = await this.#o.source.load((key, value) => {
          if (this.#live(value)) next.set(key, value);
        });
        if (this.#closing) return;
        let current = version;
        let gap = this.#bufferOverflowed;
        for (const event of this.#buffer) {
          if (event.version === undefined) {
            this.#applyChange(next, event.change, false);
          } else if (event.version <= current) {
            continue;
          } else if (event.version === current + 1) {
            this.#applyChange(next, event.change, false);
            current = event.version;
          } else {
            gap = true;
            break;
          }
          this.#noteApplied(event);
        }
        if (gap) {
          // Events are missing between the snapshot and the buffer: load again.
          reason = this.#bufferOverflowed ? 'buffer-overflow' : 'gap';
          this.#gaps++;
          await this.#pauses.pause(
            backoffDelay(Math.min(failures++, 3), this.#o.resyncRetryBaseMs, this.#o.resyncRetryMaxMs),
          );
          continue;
        }
        this.#store = next;
        this.#version = current;
        this.#buffer = undefined;
        this.#releaseHeld();
        this.#synced = true;
        this.#sourceFailing = false;
        if (startedWithBusUp && this.#busUp) this.#missedEvents = false;
        this.#resyncs++;
        this.#lastResyncAt = this.#o.clock.now();
        this.#lastResyncReason = reason;
        this.#o.logger.info({ reason, version: current, size: next.entries.size }, 'resynced');
        this.#updateState();
        this.#firstSync.resolve();
        if (this.#resyncAgain === undefined) return;
        reason = this.#resyncAgain;
      } catch (err) {
        this.#resyncFailures++;
        this.#sourceFailing = true;
        this.#updateState();
        const delay = backoffDelay(failures++, this.#o.resyncRetryBaseMs, this.#o.resyncRetryMaxMs);
        this.#o.logger.warn({ reason, err: describeError(err), retryInMs: delay }, 'resync failed');
        await this.#pauses.pause(delay);
      }
    }
  }

  #onBusDown(): void {
    if (!this.#busUp) return;
    this.#busUp = false;
    this.#missedEvents = true;
    this.#o.logger.warn({}, 'bus down: replica degraded until resynced');
    this.#updateState();
  }

  #updateState(): void {
    const state: ReplicaState = !this.#synced
      ? 'syncing'
      : this.#busUp && !this.#sourceFailing && !this.#missedEvents
        ? 'ready'
        : 'degraded';
    this.#refuseReads = this.#o.degradedReads === 'refuse' && state !== 'ready';
    if (state === this.#state) return;
    this.#state = state;
    for (const listener of [...this.#stateListeners]) listener(state);
  }

  // ---------------------------------------------------------------- timers

  #scheduleVersionCheck(): void {
    const interval = this.#o.versionCheckIntervalMs;
    if (interval === 0 || this.#closing) return;
    this.#versionTimer = this.#o.clock.setTimeout(() => {
      void this.checkVersion().finally(() => this.#scheduleVersionCheck());
    }, interval);
    this.#versionTimer.unref?.();
  }

  /**
   * Compares the local version with the source's and resyncs when they differ
   * for longer than the grace period. Returns true when a resync was started.
   */
  async checkVersion(): Promise<boolean> {
    if (this.#closing || this.#resyncing) return false;
    try {
      const remote = await this.#o.source.version();
      if (remote === this.#version) return false;
      if (remote > this.#version && this.#o.versionCheckGraceMs > 0) {
        await this.#pauses.pause(this.#o.versionCheckGraceMs);
        if (this.#closing || this.#resyncing || this.#version >= remote) return false;
      }
      this.#o.logger.warn({ local: this.#version, source: remote }, 'replica behind its source, resyncing');
      void this.resync('behind');
      return true;
    } catch (err) {
      this.#o.logger.warn({ err: describeError(err) }, 'version check failed');
      return false;
    }
  }

  #scheduleSweep(): void {
    if (!this.#expireAt || this.#closing) return;
    this.#sweepTimer = this.#o.clock.setTimeout(() => {
      this.sweep();
      this.#scheduleSweep();
    }, this.#o.sweepIntervalMs);
    this.#sweepTimer.unref?.();
  }

  /**
   * Frees up to `sweepBatch` expired entries, resuming where the last call
   * stopped, so a million entries never block the event loop at once.
   * Returns how many were removed.
   */
  sweep(): number {
    if (!this.#expireAt) return 0;
    const store = this.#store;
    if (this.#sweepStore !== store || !this.#sweepIterator) {
      this.#sweepStore = store;
      this.#sweepIterator = store.entries.entries();
    }
    const now = this.#o.clock.now();
    let removed = 0;
    for (let i = 0; i < this.#o.sweepBatch; i++) {
      const next = this.#sweepIterator.next();
      if (next.done) {
        this.#sweepIterator = undefined;
        break;
      }
      const [key, value] = next.value;
      const at = this.#expireAt(value);
      if (at !== undefined && at <= now) {
        store.delete(key);
        removed++;
      }
    }
    return removed;
  }

  // ---------------------------------------------------------------- stats

  stats(): ReplicaStats {
    return {
      dataset: this.dataset,
      state: this.#state,
      version: this.#version,
      size: this.size,
      last_event_at: this.#lastEventAt === null ? null : new Date(this.#lastEventAt).toISOString(),
      lag_ms: this.#lagMs,
      events_applied: this.#applied,
      events_rejected: this.#rejected,
      events_duplicate: this.#duplicates,
      gaps: this.#gaps,
      resyncs: this.#resyncs,
      resync_failures: this.#resyncFailures,
      last_resync_at: this.#lastResyncAt === null ? null : new Date(this.#lastResyncAt).toISOString(),
      last_resync_reason: this.#lastResyncReason,
      degraded_read_policy: this.#o.degradedReads,
      bus_connected: this.#busUp,
      rejected_by_code: { ...this.#rejectedByCode },
    };
  }
}
