import type { BusMessage, Subscription } from '../bus/bus.ts';
import { CachecastError, describeError, isCachecastError } from '../errors.ts';
import { deferred } from '../util/deferred.ts';
import { comparableFrom } from './digest.ts';
import { Expiry } from './expiry.ts';
import { Freshness } from './freshness.ts';
import type { EntryHasher as Hasher, ReplicaEvent, VersionedEvent, Generation } from './generation.ts';
import { EntryHasher } from './generation.ts';
import { EpochBook } from './epochs.ts';
import { GapRepair } from './gap-repair.ts';
import { decodeIncoming, heartbeatObservation } from './incoming.ts';
import type { ResolvedReplicaOptions } from './options.ts';
import type { ResyncReason } from './resync.ts';
import { REPAIR_REASONS, Resync } from './resync.ts';
import type { ReplicaState, ReplicaStats } from './stats.ts';
import { ReplicaCounters } from './stats.ts';

/**
 * Keeps a replica's serving generation equal to its source: takes events off
 * the bus and orders them by version (Sequencer, through Generation), loads
 * and rebases new generations (Resync), repairs lost events (GapRepair),
 * proves the replica current within `maxStalenessMs` (Freshness), sweeps
 * expired entries (Expiry), and decides the state: `ready` only with a
 * snapshot loaded and proven, the bus up since the last resync, no repair
 * running, and a recent proof. ReplicatedCache reads what it serves.
 */
export class Replicator<V> {
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

  readonly #epochs: EpochBook<V>;
  readonly #gaps: GapRepair<V>;
  #repairsStarted = 0;
  readonly #firstSync = deferred<void>();

  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #subscription: Subscription | undefined;
  #unlistenBus: (() => void) | undefined;
  readonly #stateListeners = new Set<(state: ReplicaState) => void>();

  constructor(o: ResolvedReplicaOptions<V>, live: (value: V) => boolean) {
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
      random: o.random,
      arrivalOrder: o.mutant === 'buffer-order',
      isLive: live,
      closing: () => this.#closing !== undefined,
      waiting: () => this.#gen?.heldEvents() ?? [],
      takeEpochEvents: (epoch) => this.#epochs.take(epoch),
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
        catchUp: (reason, target) => this.#gaps.catchUp(reason, target),
        changed: () => this.#updateState(),
        // The source answers again: a resync waiting out its backoff goes now.
        sourceAnswered: () => {
          if (this.#sourceFailing) this.#resync.wake();
        },
      },
      {
        maxStalenessMs: o.maxStalenessMs,
        staleCheckMs: o.staleCheckMs,
        graceMs: o.versionCheckGraceMs,
        checkIntervalMs: o.versionCheckIntervalMs,
        expiring: this.#expireAt !== undefined,
        versionOnly: o.mutant === 'version-only-check',
        noHeartbeat: o.mutant === 'no-heartbeat',
        earlyUnproven: o.mutant === 'early-unproven',
      },
    );
    this.#epochs = new EpochBook<V>(o.maxBufferedEvents);
    this.#gaps = new GapRepair<V>({
      clock,
      logger,
      dataset,
      source: o.source,
      gapWaitMs: o.gapWaitMs,
      maxHeld: o.maxBufferedEvents,
      serving: () => this.#gen,
      busy: () => this.#resync.running || this.#closing !== undefined,
      offer: (gen, event) => this.#offer(gen, event),
      resync: (reason) => void this.resync(reason),
      started: (reason) => {
        this.#repairsStarted++;
        this.#repairing ??= reason;
        this.#updateState();
      },
      repaired: (reason, state, readAt, fromBucket, from) => {
        this.#counters.catchUps++;
        if (this.#repairing === reason) this.#repairing = undefined;
        this.#updateState();
        if (state) this.#freshness.onSourceState(state, readAt, fromBucket, from);
      },
      gap: () => this.#counters.gaps++,
    });
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

  /** The generation reads are served from (undefined until the first snapshot). */
  get serving(): Generation<V> | undefined {
    return this.#gen;
  }

  /** Reads must throw REPLICA_UNAVAILABLE (the `refuse` policy, while not ready). */
  get refuseReads(): boolean {
    return this.#refuseReads;
  }

  get degradedReads(): ResolvedReplicaOptions<V>['degradedReads'] {
    return this.#o.degradedReads;
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
      this.#firstSync.reject(new CachecastError('REPLICA_CLOSED', 'replica closed before it synced'));
      this.#firstSync.promise.catch(() => undefined);
      await this.#subscription?.close();
      await this.#resync.close();
      await this.#gaps.close();
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
      const observation = heartbeatObservation(incoming.heartbeat);
      // The no-epoch mutant: epochs ignored.
      if (this.#o.mutant === 'no-epoch') observation.epoch = this.#gen?.epoch ?? observation.epoch;
      this.#freshness.onHeartbeat(observation);
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
    this.#gaps.watch(gen);
  }

  #noteApplied(gen: Generation<V>, event: ReplicaEvent<V>): void {
    this.#o.onApplied?.(event, gen.epoch);
    this.#counters.noteApplied(this.#o.clock.now(), event.publishedAt);
  }

  /** An event of another epoch: late (dropped), or a new one's (kept, and the source is asked). */
  #otherEpoch(event: VersionedEvent<V>): void {
    if (this.#epochs.isRetired(event.epoch!)) {
      this.#counters.staleEpoch++;
      return;
    }
    this.#epochs.hold(event);
    // A new epoch reloads at once, once the source confirms it (an event's epoch may be forged);
    // a load already running will see it.
    if (!this.#resync.running) void this.#freshness.check();
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
      this.#o.logger.warn({ from: previous.epoch, to: gen.epoch }, 'source epoch changed');
    }
    this.#epochs.moved(previous?.epoch, gen.epoch);
    this.#gen = gen;
    this.#sourceFailing = false;
    if (busStayedUp) this.#missedEvents = false;
    this.#repairing = undefined;
    const c = this.#counters;
    c.resyncs++;
    c.lastResyncAt = this.#o.clock.now();
    c.lastResyncReason = reason;
    this.#o.logger.info({ reason, epoch: gen.epoch, version: gen.version, size: gen.store.size }, 'resynced');
    this.#gaps.clear();
    this.#freshness.onSynced(startedAt);
    this.#updateState();
    this.#firstSync.resolve();
    this.#gaps.watch(gen);
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
    const gen = this.#gen;
    const now = this.#o.clock.now();
    return this.#counters.toStats({
      now,
      dataset: this.dataset,
      state: this.state,
      version: this.version,
      epoch: this.epoch,
      digest: gen?.digest(this.#expireAt ? comparableFrom(now) : -Infinity) ?? null,
      size: gen?.store.size ?? 0,
      held: gen?.held ?? 0,
      freshness: this.#freshness.stats(),
      repairing: this.#repairing ?? null,
      sourceFailing: this.#sourceFailing,
      degradedReadPolicy: this.#o.degradedReads,
      busConnected: this.#busUp,
    });
  }
}
