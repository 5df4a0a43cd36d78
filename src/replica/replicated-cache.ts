import type { BusMessage, Subscription } from '../bus/bus.ts';
import type { TimerHandle } from '../clock.ts';
import { CachecastError, describeError, isCachecastError } from '../errors.ts';
import { deferred } from '../util/deferred.ts';
import { comparableFrom, DIGEST_BUCKET_S } from './digest.ts';
import { Expiry } from './expiry.ts';
import { Freshness } from './freshness.ts';
import type { EntryHasher as Hasher, ReplicaEvent, VersionedEvent, Generation } from './generation.ts';
import { EntryHasher } from './generation.ts';
import { decodeChange, decodeIncoming } from './incoming.ts';
import type { ReplicatedCacheOptions, ResolvedReplicaOptions } from './options.ts';
import { normalizeReplicaOptions } from './options.ts';
import type { ResyncReason } from './resync.ts';
import { REPAIR_REASONS, Resync } from './resync.ts';
import type { ReplicaState, ReplicaStats } from './stats.ts';
import { isoOrNull, ReplicaCounters } from './stats.ts';

export type { ReplicaState, ReplicaStats } from './stats.ts';

/** Epochs left behind, remembered so their late events are dropped, not mistaken for a new epoch. */
const RETIRED_EPOCHS = 8;

/**
 * A named dataset held in memory and kept equal to its source of truth.
 *
 * Reads are synchronous Map lookups on the serving generation. Events are
 * ordered by version (Sequencer), a resync loads a new generation and rebases
 * the waiting events onto it (Resync), the replica proves it equals the
 * source by `(epoch, version, digest)` within `maxStalenessMs` (Freshness),
 * and expired entries are swept in small steps (Expiry). This class wires
 * them to the bus and decides the state: `ready` only with a snapshot loaded,
 * the bus up since the last resync, no repair pending, and a recent proof.
 */
export class ReplicatedCache<V> {
  readonly #o: ResolvedReplicaOptions<V>;
  readonly #expireAt: ((value: V) => number | undefined) | undefined;
  readonly #hasher: Hasher<V> | undefined;
  readonly #resync: Resync<V>;
  readonly #freshness: Freshness<V>;
  readonly #expiry: Expiry<V> | undefined;
  readonly #counters = new ReplicaCounters();
  #gen: Generation<V> | undefined;

  // state inputs
  #busUp = false;
  #busDowns = 0;
  #sourceFailing = false;
  /** Set when the bus went down: events may have been missed until a resync that starts with the bus up. */
  #missedEvents = false;
  /** A repair in progress (lost event, divergence, new epoch): the serving data is known to be off. */
  #repairing: ResyncReason | undefined;
  #state: ReplicaState = 'syncing';
  #provenOnce = false;
  #refuseReads = true;

  readonly #retiredEpochs: string[] = [];
  /** Events of an epoch not known yet (a source reset): kept for the load that reveals it. */
  readonly #otherEpochs = new Map<string, Array<VersionedEvent<V>>>();
  #otherEpochEvents = 0;
  #gapTimer: TimerHandle | undefined;
  #repairsStarted = 0;
  #catchingUp: Promise<void> | undefined;
  readonly #firstSync = deferred<void>();

  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #subscription: Subscription | undefined;
  #unlistenBus: (() => void) | undefined;
  readonly #stateListeners = new Set<(state: ReplicaState) => void>();

  constructor(options: ReplicatedCacheOptions<V>) {
    const o = normalizeReplicaOptions(options);
    this.#o = o;
    const { dataset, clock, logger } = o;
    this.#expireAt = dataset.expireAt?.bind(dataset);
    this.#hasher = EntryHasher.for(dataset, o.source.digestAlgorithm);
    // Readers of a replica that has never synced get nothing, whatever the policy.
    this.#refuseReads = o.degradedReads === 'refuse';
    this.#resync = new Resync<V>({
      clock,
      logger,
      dataset,
      source: o.source,
      hasher: this.#hasher,
      maxBufferedEvents: o.maxBufferedEvents,
      retryBaseMs: o.resyncRetryBaseMs,
      retryMaxMs: o.resyncRetryMaxMs,
      arrivalOrder: o.mutant === 'buffer-order',
      isLive: (value) => this.#live(value),
      closing: () => this.#closing !== undefined,
      waiting: () => this.#gen?.heldEvents() ?? [],
      takeEpochEvents: (epoch) => this.#takeEpochEvents(epoch),
      offer: (gen, event) => this.#offer(gen, event),
      swap: (gen, done) => {
        this.#swap(gen, done.reason, done.startedAt, done.busStayedUp);
        if (done.unversioned) this.#freshness.onUnverifiedChange();
      },
      beginLoad: () => this.#busWatch(),
      failed: (err, reason, retryInMs) => this.#resyncFailed(err, reason, retryInMs),
      gap: () => this.#counters.gaps++,
    });
    this.#freshness = new Freshness<V>(
      {
        clock,
        logger,
        source: o.source,
        serving: () => this.#gen,
        resyncing: () => this.#resync.running,
        resync: (reason) => void this.resync(reason),
        catchUp: (reason, target) => this.#catchUp(reason, target),
        changed: () => this.#updateState(),
      },
      {
        maxStalenessMs: o.maxStalenessMs,
        staleCheckMs: o.staleCheckMs,
        graceMs: o.versionCheckGraceMs,
        checkIntervalMs: o.versionCheckIntervalMs,
        expiring: this.#expireAt !== undefined,
        versionOnly: o.mutant === 'version-only-check',
        noHeartbeat: o.mutant === 'no-heartbeat',
      },
    );
    if (this.#expireAt) {
      this.#expiry = new Expiry<V>({
        clock,
        expireAt: this.#expireAt,
        batch: o.sweepBatch,
        intervalMs: o.sweepIntervalMs,
        serving: () => this.#gen,
      });
    }
  }

  get dataset(): string {
    return this.#o.dataset.name;
  }

  get state(): ReplicaState {
    // The bound passes with time, not with an event: look at the clock.
    if (this.#state === 'ready' && !this.#freshness.fresh()) this.#updateState();
    return this.#state;
  }

  get version(): number {
    return this.#gen?.version ?? 0;
  }

  get epoch(): string {
    return this.#gen?.epoch ?? '';
  }

  /**
   * Whether reads can be answered: a snapshot has loaded, and the replica is
   * ready or its policy lets it answer while degraded. Readiness probes use
   * this, so a broker outage does not pull every pod out of service at once,
   * while a fail-closed (`refuse`) replica does leave the load balancer.
   */
  get canServe(): boolean {
    return this.#gen !== undefined && !this.#refuseReads;
  }

  /**
   * Synced, on the bus since its last resync, and repairing nothing: it has
   * every event that reached it, and only a recent proof of equality may be
   * missing (its source cannot be read). A caller whose own fallback to the
   * source fails too may still trust it more than nothing: while the source
   * is unreachable, nobody can commit a change to it either.
   */
  get following(): boolean {
    return this.#gen !== undefined && this.#busUp && !this.#missedEvents && this.#repairing === undefined;
  }

  /** Entries held, including expired ones not yet swept. */
  get size(): number {
    return this.#gen?.store.size ?? 0;
  }

  // ---------------------------------------------------------------- reads

  get(key: string): V | undefined {
    if (this.#refuseReads) this.#unavailable();
    const value = this.#gen?.store.get(key);
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
    if (this.#gen) for (const value of this.#gen.store.values()) if (this.#live(value)) out.push(value);
    return out;
  }

  /** Every live entry as [key, value] (a copy). */
  entries(): Array<[string, V]> {
    if (this.#refuseReads) this.#unavailable();
    const out: Array<[string, V]> = [];
    if (this.#gen) for (const entry of this.#gen.store.entries()) if (this.#live(entry[1])) out.push(entry);
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
    if (this.#refuseReads) this.#unavailable();
    if (!this.#o.dataset.indexes?.[index]) {
      throw new CachecastError('REPLICA_UNKNOWN_INDEX', `dataset ${this.dataset} has no index ${index}`);
    }
    const store = this.#gen?.store;
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
    return at === undefined || at > this.#o.clock.now();
  }

  #unavailable(): never {
    throw new CachecastError('REPLICA_UNAVAILABLE', `replica ${this.dataset} is ${this.#state}`);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Subscribes, loads the first snapshot; resolves once the replica has synced. Idempotent. */
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
      void this.#resync.request('start');
      await this.#firstSync.promise;
      this.#freshness.start();
      this.#expiry?.start();
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
      this.#freshness.close();
      this.#expiry?.close();
      this.#clearGapTimer();
      this.#firstSync.reject(new CachecastError('REPLICA_CLOSED', 'replica closed before it synced'));
      this.#firstSync.promise.catch(() => undefined);
      await this.#subscription?.close();
      await this.#resync.close();
      await this.#catchingUp;
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------- events

  #onMessage(message: BusMessage): void {
    let incoming;
    try {
      incoming = decodeIncoming<V>(message, this.#o.dataset, {
        maxBytes: this.#o.maxEventBytes,
        secret: this.#o.eventSecret,
      });
    } catch (err) {
      const code = isCachecastError(err) ? err.code : 'EVENT_BAD_SHAPE';
      this.#counters.reject(code);
      this.#o.logger.warn({ code, err: describeError(err) }, 'event rejected');
      return;
    }
    if (incoming.kind === 'ignore') return;
    if (incoming.kind === 'heartbeat') {
      const h = incoming.heartbeat;
      const fromBucket =
        h.digestFrom !== undefined && h.digestFrom % DIGEST_BUCKET_S === 0
          ? h.digestFrom / DIGEST_BUCKET_S
          : undefined;
      this.#freshness.onHeartbeat({
        epoch: this.#o.mutant === 'no-epoch' ? (this.#gen?.epoch ?? h.epoch) : h.epoch,
        version: h.version,
        digest: h.digest,
        fromBucket,
        readAt: h.readAt,
        authoritative: false,
      });
      return;
    }
    this.#receive(incoming.event);
  }

  #receive(raw: ReplicaEvent<V>): void {
    // The no-epoch mutant: epochs ignored, versions of two epochs compared.
    const event = this.#o.mutant === 'no-epoch' ? { ...raw, epoch: undefined } : raw;
    if (this.#resync.running) this.#resync.record(event);
    const gen = this.#gen;
    if (!gen) return;
    if (event.version === undefined) {
      gen.applyUnversioned(event.change);
      this.#noteApplied(gen, event);
      this.#freshness.onUnverifiedChange();
      return;
    }
    if (event.epoch !== undefined && event.epoch !== gen.epoch)
      return this.#otherEpoch(event as VersionedEvent<V>);
    this.#offer(gen, event as VersionedEvent<V>);
  }

  /** The live path's rules for one versioned event, on any generation (the serving one, or one being rebased). */
  #offer(gen: Generation<V>, event: VersionedEvent<V>): void {
    const serving = gen === this.#gen;
    if (!gen.offer(event)) {
      if (serving) this.#counters.duplicates++;
      return;
    }
    const { change } = event;
    if (
      this.#o.dataset.commutative &&
      event.version > gen.version + 1 &&
      (change.kind === 'set' || change.kind === 'delete')
    ) {
      // Usually another writer's event still in flight: changes that commute need not wait for it.
      gen.applyEarly(event);
      this.#o.onApplied?.(event, gen.epoch);
    }
    gen.release((released, early) => {
      if (!early) this.#o.onApplied?.(released, gen.epoch);
      if (serving) this.#counters.noteApplied(this.#o.clock.now(), released.publishedAt);
    });
    if (!serving) return;
    this.#freshness.onAdvanced();
    if (gen.reloadAt !== undefined) {
      void this.resync('reload');
      return;
    }
    this.#watchGap(gen);
  }

  #noteApplied(gen: Generation<V>, event: ReplicaEvent<V>): void {
    this.#o.onApplied?.(event, gen.epoch);
    this.#counters.noteApplied(this.#o.clock.now(), event.publishedAt);
  }

  #otherEpoch(event: VersionedEvent<V>): void {
    const epoch = event.epoch!;
    if (this.#retiredEpochs.includes(epoch)) {
      this.#counters.staleEpoch++;
      return;
    }
    if (this.#otherEpochEvents < this.#o.maxBufferedEvents) {
      let list = this.#otherEpochs.get(epoch);
      if (!list) this.#otherEpochs.set(epoch, (list = []));
      list.push(event);
      this.#otherEpochEvents++;
    }
    // A new epoch reloads at once, once the source confirms it (an event's epoch may be forged).
    void this.#freshness.check();
  }

  #takeEpochEvents(epoch: string): Array<VersionedEvent<V>> {
    const events = this.#otherEpochs.get(epoch) ?? [];
    this.#otherEpochs.clear();
    this.#otherEpochEvents = 0;
    return events;
  }

  // ---------------------------------------------------------------- gaps and catch-up

  /** A gap still open after gapWaitMs means a lost event (or too many held): repair it. */
  #watchGap(gen: Generation<V>): void {
    if (gen.held === 0) return this.#clearGapTimer();
    if (gen.held > this.#o.maxBufferedEvents) {
      this.#clearGapTimer();
      return this.#catchUp('gap', gen.firstHeld!);
    }
    if (this.#gapTimer) return;
    // A gap is as old as the longest-waiting event past it, however many versions flow meanwhile.
    const due = (gen.oldestHeldAt ?? this.#o.clock.now()) + this.#o.gapWaitMs;
    this.#gapTimer = this.#o.clock.setTimeout(
      () => {
        this.#gapTimer = undefined;
        if (gen !== this.#gen || gen.held === 0 || this.#closing) return;
        if ((gen.oldestHeldAt ?? Infinity) + this.#o.gapWaitMs > this.#o.clock.now())
          return this.#watchGap(gen);
        this.#counters.gaps++;
        this.#o.logger.warn(
          { local: gen.version, received: gen.firstHeld, waitedMs: this.#o.gapWaitMs },
          'version gap: repairing',
        );
        this.#catchUp('gap', gen.firstHeld! - 1);
      },
      Math.max(0, due - this.#o.clock.now()),
    );
    this.#gapTimer.unref?.();
  }

  #clearGapTimer(): void {
    if (this.#gapTimer) this.#o.clock.clearTimeout(this.#gapTimer);
    this.#gapTimer = undefined;
  }

  /**
   * Repairs missing versions up to `target` from the source's change log when
   * it has one (a read, not a load of the whole dataset), else reloads.
   */
  #catchUp(reason: 'gap' | 'behind', target: number): void {
    if (this.#resync.running || this.#closing || this.#catchingUp) return;
    const { source } = this.#o;
    const gen = this.#gen;
    if (!gen || !source.changesSince) return void this.resync(reason);
    this.#repairsStarted++;
    this.#repairing ??= reason;
    this.#updateState();
    this.#catchingUp = (async () => {
      const readAt = this.#o.clock.now();
      const fromBucket = comparableFrom(readAt);
      const from = gen.version;
      const result = await source.changesSince!(gen.epoch, from, fromBucket).catch((err: unknown) => {
        this.#o.logger.warn({ err: describeError(err) }, 'catch-up read failed');
        return undefined;
      });
      if (gen !== this.#gen || this.#closing || this.#resync.running) return;
      if (!result || result.epoch !== gen.epoch) return void this.resync(reason);
      try {
        for (const c of result.changes) {
          const change = decodeChange(this.#o.dataset, c.event);
          this.#offer(gen, { version: c.version, epoch: result.epoch, change, origin: 'source' });
        }
      } catch (err) {
        this.#o.logger.warn({ err: describeError(err) }, 'source log entry rejected: reloading');
        return void this.resync(reason);
      }
      if (gen.reloadAt !== undefined || this.#resync.running) return;
      // Held versions the source does not have were never committed: forged. Taken back.
      if (result.state) {
        const forged = gen.dropHeldAbove(result.state.version);
        if (forged > 0)
          this.#o.logger.warn(
            { forged, source: result.state.version },
            'dropped versions the source never had',
          );
      }
      if (gen.version < Math.min(target, result.state?.version ?? target)) return void this.resync(reason);
      this.#counters.catchUps++;
      if (this.#repairing === reason) this.#repairing = undefined;
      this.#watchGap(gen);
      this.#updateState();
      if (result.state) this.#freshness.onSourceState(result.state, readAt, fromBucket, from);
    })().finally(() => {
      this.#catchingUp = undefined;
    });
  }

  // ---------------------------------------------------------------- resync

  /** Reloads from the source; concurrent calls share one run (single-flight). */
  resync(reason: ResyncReason = 'manual'): Promise<void> {
    if (this.#closing) return Promise.resolve();
    if (REPAIR_REASONS.has(reason) && this.#gen) {
      this.#repairsStarted++;
      this.#repairing ??= reason;
      this.#updateState();
    }
    return this.#resync.request(reason);
  }

  /**
   * Reads the source's state now and repairs what it shows (behind, ahead,
   * another epoch, different content). Returns true when a repair started.
   */
  async checkVersion(): Promise<boolean> {
    if (this.#closing || this.#resync.running) return false;
    const before = this.#repairsStarted;
    await this.#freshness.check();
    return this.#repairsStarted > before;
  }

  /** A token that tells, at the swap, whether the bus stayed up since the load began. */
  #busWatch(): () => boolean {
    const downs = this.#busDowns;
    const up = this.#busUp;
    return () => up && this.#busUp && this.#busDowns === downs;
  }

  #swap(gen: Generation<V>, reason: ResyncReason, startedAt: number, busStayedUp: boolean): void {
    const previous = this.#gen;
    if (previous && previous.epoch !== gen.epoch) {
      this.#retiredEpochs.push(previous.epoch);
      if (this.#retiredEpochs.length > RETIRED_EPOCHS) this.#retiredEpochs.shift();
      this.#o.logger.warn({ from: previous.epoch, to: gen.epoch }, 'source epoch changed');
    }
    const retired = this.#retiredEpochs.indexOf(gen.epoch);
    if (retired >= 0) this.#retiredEpochs.splice(retired, 1);
    this.#gen = gen;
    this.#sourceFailing = false;
    if (busStayedUp) this.#missedEvents = false;
    this.#repairing = undefined;
    const c = this.#counters;
    c.resyncs++;
    c.lastResyncAt = this.#o.clock.now();
    c.lastResyncReason = reason;
    this.#o.logger.info({ reason, epoch: gen.epoch, version: gen.version, size: gen.store.size }, 'resynced');
    this.#clearGapTimer();
    this.#freshness.onSynced(startedAt);
    this.#updateState();
    this.#firstSync.resolve();
    this.#watchGap(gen);
  }

  #resyncFailed(err: unknown, reason: ResyncReason, retryInMs: number): void {
    this.#counters.resyncFailures++;
    this.#sourceFailing = true;
    this.#updateState();
    this.#o.logger.warn({ reason, err: describeError(err), retryInMs }, 'resync failed');
  }

  #onBusDown(): void {
    if (!this.#busUp) return;
    this.#busUp = false;
    this.#busDowns++;
    this.#missedEvents = true;
    this.#o.logger.warn({}, 'bus down: replica degraded until resynced');
    this.#updateState();
  }

  #updateState(): void {
    const healthy =
      this.#gen !== undefined &&
      this.#busUp &&
      !this.#sourceFailing &&
      !this.#missedEvents &&
      this.#repairing === undefined &&
      this.#freshness.fresh();
    if (healthy) this.#provenOnce = true;
    // `syncing` until the first snapshot is loaded and proven current (a long load's own proof is old).
    const state: ReplicaState = healthy ? 'ready' : this.#provenOnce ? 'degraded' : 'syncing';
    this.#refuseReads = this.#o.degradedReads === 'refuse' && state !== 'ready';
    if (state === this.#state) return;
    this.#state = state;
    for (const listener of [...this.#stateListeners]) listener(state);
  }

  // ---------------------------------------------------------------- expiry

  /**
   * Frees up to `sweepBatch` expired entries, resuming where the last call
   * stopped. Returns how many were removed.
   */
  sweep(): number {
    return this.#expiry?.sweep() ?? 0;
  }

  // ---------------------------------------------------------------- stats

  stats(): ReplicaStats {
    const c = this.#counters;
    const f = this.#freshness.stats();
    const now = this.#o.clock.now();
    const gen = this.#gen;
    return {
      dataset: this.dataset,
      state: this.state,
      version: this.version,
      epoch: this.epoch,
      digest: gen?.digest(this.#expireAt ? comparableFrom(now) : -Infinity) ?? null,
      size: this.size,
      last_event_at: isoOrNull(c.lastEventAt),
      lag_ms: c.lagMs,
      verified_at: isoOrNull(f.verified_at),
      staleness_ms: f.verified_at === null ? null : Math.max(0, now - f.verified_at),
      events_applied: c.applied,
      events_rejected: c.rejected,
      events_duplicate: c.duplicates,
      events_stale_epoch: c.staleEpoch,
      events_held: gen?.held ?? 0,
      gaps: c.gaps,
      resyncs: c.resyncs,
      resync_failures: c.resyncFailures,
      catch_ups: c.catchUps,
      divergences: f.divergences,
      heartbeats: f.heartbeats,
      source_checks: f.checks,
      source_check_failures: f.check_failures,
      repairing: this.#repairing ?? null,
      source_failing: this.#sourceFailing,
      last_resync_at: isoOrNull(c.lastResyncAt),
      last_resync_reason: c.lastResyncReason,
      degraded_read_policy: this.#o.degradedReads,
      bus_connected: this.#busUp,
      rejected_by_code: { ...c.rejectedByCode },
    };
  }
}
