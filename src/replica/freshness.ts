import type { Clock, TimerHandle } from '../clock.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Pauses } from '../util/pauses.ts';
import { bucketOf, comparableFrom } from './digest.ts';
import type { Generation } from './generation.ts';
import type { SnapshotSource, SourceState } from './source.ts';

/** What a replica learnt of its source's state: from a heartbeat, or read by itself (authoritative). */
export interface Observation {
  epoch: string;
  version: number;
  /** Combined digest of the buckets >= `fromBucket` (all buckets when absent). */
  digest?: string | undefined;
  fromBucket?: number | undefined;
  /** Epoch ms when the state was read from the source. */
  readAt: number;
  /** Read by this replica from the source itself (a heartbeat can be stale, or forged). */
  authoritative: boolean;
  /** For authoritative reads: this replica's version when it sent the read. */
  localVersionAtRead?: number;
}

/** Reads of the source a replica asks for follow each other at least this far apart. */
const MIN_CHECK_GAP_MS = 50;

export type RepairReason = 'behind' | 'ahead' | 'epoch' | 'diverged';

export interface FreshnessHost<V> {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly source: SnapshotSource<V>;
  /** The serving generation, once synced. */
  serving(): Generation<V> | undefined;
  /** A resync is loading: its swap re-evaluates everything, so no repair starts meanwhile. */
  resyncing(): boolean;
  /** Reload from the source at once. */
  resync(reason: RepairReason): void;
  /** Fetch the missing events from the source's log if it can, else reload. */
  catchUp(reason: 'behind', target: number): void;
  /** Freshness moved (state may change). */
  changed(): void;
  /** A read of the source's state succeeded. */
  sourceAnswered(): void;
}

export interface FreshnessOptions {
  /** A ready replica has proof it equalled its source at most this long ago; 0 disables the bound. */
  maxStalenessMs: number;
  /** Without a proof for this long, the replica reads the source's state itself. */
  staleCheckMs: number;
  /** How long an in-flight event may take before "behind" or "diverged" counts. */
  graceMs: number;
  /** The backstop check, whatever the heartbeats say; 0 disables it. */
  checkIntervalMs: number;
  /** Entries expire: digests are compared from `comparableFrom(now)` only. */
  expiring: boolean;
  /** Simulator mutants: compare versions only; ignore heartbeats and the bound. */
  versionOnly: boolean;
  noHeartbeat: boolean;
  /** Simulator mutant: a proof ignores changes applied early, past a gap. */
  earlyUnproven: boolean;
}

export interface FreshnessStats {
  verified_at: number | null;
  heartbeats: number;
  checks: number;
  check_failures: number;
  divergences: number;
  behind: number;
}

/**
 * Keeps the proof that a replica is current. A proof is an observation of
 * the source's `(epoch, version, digest)` that this replica's generation
 * matches (now, or at that version in its recent history). The replica is
 * fresh while its last proof is at most `maxStalenessMs` old; heartbeats from
 * the writers renew it several times a second, and when they stop the
 * replica reads the source itself (`staleCheckMs`).
 *
 * What is not a proof starts a repair: a newer version waits `graceMs` for
 * its events, then the missing events are fetched (or the source loaded); a
 * digest that differs at the same version is read again after `graceMs` (a
 * foreign writer publishes just after its commit) and, if still different,
 * reloads; a source behind this replica, or in another epoch, reloads at once.
 * Heartbeats never repair by themselves: they only make the replica read the
 * source, so a forged one costs a read, not a reload.
 */
export class Freshness<V> {
  readonly #host: FreshnessHost<V>;
  readonly #o: FreshnessOptions;
  #verifiedAt = -Infinity;
  /** When a change nobody versioned (a foreign publisher, or a forger) was last applied. */
  #unverifiedAt = -Infinity;
  /** The newest observation ahead of this replica, and since when we have been behind. */
  #target: Observation | undefined;
  #behindSince: number | undefined;
  #mismatchSince: number | undefined;
  #checking: Promise<void> | undefined;
  /** The newest heartbeat: one heard during a load can prove the new generation at once. */
  #lastHeartbeat: Observation | undefined;
  #checkAgain = false;
  #tick: TimerHandle | undefined;
  #repairTimer: TimerHandle | undefined;
  #periodic: TimerHandle | undefined;
  #closed = false;
  readonly #pauses: Pauses;
  readonly #stats: FreshnessStats = {
    verified_at: null,
    heartbeats: 0,
    checks: 0,
    check_failures: 0,
    divergences: 0,
    behind: 0,
  };

  constructor(host: FreshnessHost<V>, options: FreshnessOptions) {
    this.#host = host;
    this.#o = options;
    this.#pauses = new Pauses(host.clock);
  }

  /**
   * Whether the last proof is recent enough for `ready`, and came after the
   * last unversioned change (which nothing orders: a foreign publisher's
   * event can be stale, or forged, so it counts only once a proof covers it).
   */
  fresh(now = this.#host.clock.now()): boolean {
    if (this.#o.maxStalenessMs === 0 || this.#o.noHeartbeat) return true;
    // Strictly after: a read in the same millisecond may have been issued before the change.
    return now - this.#verifiedAt <= this.#o.maxStalenessMs && this.#verifiedAt > this.#unverifiedAt;
  }

  /** An unversioned change was applied: not fresh until a proof read after it. */
  onUnverifiedChange(): void {
    const wasFresh = this.fresh();
    this.#unverifiedAt = this.#host.clock.now();
    if (wasFresh && !this.fresh()) this.#host.changed();
    // One read of the source proves it (or finds the divergence) without waiting for a heartbeat.
    if (this.#host.serving()) void this.check();
  }

  get verifiedAt(): number {
    return this.#verifiedAt;
  }

  stats(): FreshnessStats {
    return { ...this.#stats, verified_at: Number.isFinite(this.#verifiedAt) ? this.#verifiedAt : null };
  }

  start(): void {
    this.#armTick();
    this.#armPeriodic();
  }

  close(): void {
    this.#closed = true;
    this.#pauses.stop();
    const { clock } = this.#host;
    for (const timer of [this.#tick, this.#repairTimer, this.#periodic]) if (timer) clock.clearTimeout(timer);
  }

  /**
   * A snapshot was swapped in: it was the source's state when the load began,
   * and the events that came meanwhile are applied. A long load (a million
   * keys) makes that proof old: the newest heartbeat heard meanwhile, or one
   * read, proves the rest.
   */
  onSynced(readAt: number): void {
    this.#target = undefined;
    this.#behindSince = undefined;
    this.#mismatchSince = undefined;
    this.#prove(readAt);
    const last = this.#lastHeartbeat;
    if (last && last.readAt > readAt) this.#observe(last);
    if (!this.fresh()) void this.check();
  }

  /** A heartbeat arrived on the bus. */
  onHeartbeat(o: Observation): void {
    this.#stats.heartbeats++;
    if (this.#o.noHeartbeat) return;
    if (!this.#lastHeartbeat || o.readAt >= this.#lastHeartbeat.readAt) this.#lastHeartbeat = o;
    this.#observe(o);
  }

  /** The serving generation released events: a target it was waiting for may be reached. */
  onAdvanced(): void {
    const target = this.#target;
    const gen = this.#host.serving();
    if (!target || !gen || gen.version < target.version) return;
    this.#target = undefined;
    this.#behindSince = undefined;
    this.#observe(target);
  }

  /** A state read from the source by this replica (e.g. with a catch-up's changes). */
  onSourceState(state: SourceState, readAt: number, fromBucket: number, localVersionAtRead: number): void {
    this.#observe({ ...state, fromBucket, readAt, authoritative: true, localVersionAtRead });
  }

  /** Reads the source's state now (single-flight). Resolves when compared. */
  check(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#checking) {
      this.#checkAgain = true;
      return this.#checking;
    }
    this.#checking = this.#runChecks().finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #runChecks(): Promise<void> {
    do {
      this.#checkAgain = false;
      const started = this.#host.clock.now();
      await this.#checkOnce();
      // Asked again meanwhile (events of a new epoch, unversioned changes, a burst): one more
      // read, but not more than one per MIN_CHECK_GAP_MS, whatever the event rate.
      if (this.#checkAgain && !this.#closed)
        await this.#pauses.pause(started + MIN_CHECK_GAP_MS - this.#host.clock.now());
    } while (this.#checkAgain && !this.#closed);
  }

  async #checkOnce(): Promise<void> {
    const gen = this.#host.serving();
    if (!gen) return;
    const { clock, source } = this.#host;
    const readAt = clock.now();
    const localVersionAtRead = gen.version;
    const fromBucket = comparableFrom(readAt);
    this.#stats.checks++;
    let state: SourceState;
    try {
      state = source.state
        ? await source.state(fromBucket)
        : { epoch: gen.epoch, version: await source.version() };
    } catch (err) {
      this.#stats.check_failures++;
      this.#host.logger.warn({ err: describeError(err) }, 'source check failed');
      return;
    }
    if (this.#closed) return;
    this.#host.sourceAnswered();
    this.#observe({ ...state, fromBucket, readAt, authoritative: true, localVersionAtRead });
  }

  #observe(o: Observation): void {
    const gen = this.#host.serving();
    if (!gen || this.#closed) return;
    const now = this.#host.clock.now();
    if (o.epoch !== gen.epoch) {
      if (!o.authoritative) return void this.check();
      if (this.#host.resyncing()) return;
      this.#host.logger.warn(
        { local: gen.epoch, source: o.epoch },
        'the source is in another epoch: reloading',
      );
      return this.#host.resync('epoch');
    }
    if (o.version > gen.version) return this.#behind(o, now);
    // Every event applied here was committed before this read: the source lost it, or it was forged.
    if (o.authoritative && o.version < (o.localVersionAtRead ?? gen.version)) return this.#ahead(gen, o);
    // An observation proves what the store held when the source was read. A change of a later
    // version already in the store then (released, or applied early past a gap) is one the
    // source did not have: forged, or lost by the source. A heartbeat only makes us read.
    const early = !this.#o.earlyUnproven;
    const entered = gen.enteredAbove(o.version, early);
    if (entered === undefined) return;
    if (entered <= o.readAt) {
      if (!o.authoritative) return void this.check();
      if (this.#host.resyncing()) return;
      // Held ones (applied early, or waiting) are taken back; a released one needs a reload.
      const forged = gen.dropHeldAbove(o.version, o.readAt);
      if (forged > 0)
        this.#host.logger.warn({ forged, source: o.version }, 'dropped versions the source never had');
      if ((gen.enteredAbove(o.version, early) ?? -Infinity) <= o.readAt) return this.#ahead(gen, o);
    }
    const local = this.#localDigest(gen, o, now);
    if (local === undefined) {
      // Nothing to compare at that version: only the current version proves anything.
      if (o.version === gen.version) this.#prove(o.readAt);
      return;
    }
    if (local === o.digest) {
      this.#mismatchSince = undefined;
      this.#prove(o.readAt);
      return;
    }
    this.#mismatch(o, now);
  }

  /** The replica holds a version its source did not have when read: reload (unless a load runs). */
  #ahead(gen: Generation<V>, o: Observation): void {
    if (this.#host.resyncing()) return;
    this.#host.logger.warn(
      { local: gen.version, source: o.version },
      'replica ahead of its source: reloading',
    );
    this.#host.resync('ahead');
  }

  /** This generation's digest comparable with `o`; undefined when there is nothing to compare. */
  #localDigest(gen: Generation<V>, o: Observation, now: number): string | undefined {
    if (this.#o.versionOnly || o.digest === undefined || !gen.hasDigest) return undefined;
    let fromBucket = -Infinity;
    if (this.#o.expiring) {
      // Buckets this replica may already have begun to expire are not comparable.
      if (o.fromBucket === undefined || o.fromBucket < bucketOf(now) + 1) return undefined;
      fromBucket = o.fromBucket;
    }
    return gen.digestAt(o.version, fromBucket);
  }

  #behind(o: Observation, now: number): void {
    if (!this.#target || o.version >= this.#target.version) this.#target = o;
    if (this.#behindSince === undefined) {
      this.#behindSince = now;
      this.#stats.behind++;
    }
    const due = this.#behindSince + this.#o.graceMs;
    if (now < due) return this.#armRepair(due);
    // The events had their grace: ask the source (a heartbeat may lie), or repair (a read does not).
    if (!o.authoritative) return void this.check();
    if (this.#host.resyncing()) return;
    this.#host.catchUp('behind', this.#target.version);
  }

  #mismatch(o: Observation, now: number): void {
    this.#mismatchSince ??= now;
    const due = this.#mismatchSince + this.#o.graceMs;
    if (now < due || !o.authoritative) {
      if (now < due) this.#armRepair(due);
      else void this.check();
      return;
    }
    if (this.#host.resyncing()) return;
    const gen = this.#host.serving();
    this.#stats.divergences++;
    this.#mismatchSince = undefined;
    this.#host.logger.warn(
      { version: o.version, local: gen?.digestAt(o.version, o.fromBucket ?? -Infinity), source: o.digest },
      'replica diverged from its source (same version, different content): reloading',
    );
    this.#host.resync('diverged');
  }

  /** At `due`, re-examine: still behind or still different means a read of the source. */
  #armRepair(due: number): void {
    if (this.#repairTimer) return;
    const { clock } = this.#host;
    this.#repairTimer = clock.setTimeout(
      () => {
        this.#repairTimer = undefined;
        if (this.#closed) return;
        const gen = this.#host.serving();
        const behind = this.#target && gen && gen.version < this.#target.version;
        if (behind || this.#mismatchSince !== undefined) void this.check();
      },
      Math.max(0, due - clock.now()),
    );
    this.#repairTimer.unref?.();
  }

  #prove(readAt: number): void {
    const at = Math.min(readAt, this.#host.clock.now());
    if (at <= this.#verifiedAt) return;
    const wasFresh = this.fresh();
    this.#verifiedAt = at;
    this.#stats.verified_at = at;
    if (!wasFresh) this.#host.changed();
  }

  /**
   * One timer for the bound: at verifiedAt + staleCheckMs it reads the source
   * (no heartbeat proved anything meanwhile), at verifiedAt + maxStalenessMs
   * the replica stops being fresh. Heartbeats only move verifiedAt; the timer
   * notices when it fires.
   */
  #armTick(): void {
    if (this.#closed || this.#o.maxStalenessMs === 0 || this.#o.noHeartbeat) return;
    const { clock } = this.#host;
    const now = clock.now();
    const checkAt = this.#verifiedAt + this.#o.staleCheckMs;
    const staleAt = this.#verifiedAt + this.#o.maxStalenessMs;
    // While unproven, check again every staleCheckMs / 2 (a failing source, a check still behind).
    const next = now < checkAt ? checkAt : now < staleAt ? staleAt : now + this.#o.staleCheckMs / 2;
    this.#tick = clock.setTimeout(
      () => {
        this.#tick = undefined;
        if (this.#closed) return;
        const t = clock.now();
        if (t >= this.#verifiedAt + this.#o.staleCheckMs && this.#host.serving()) void this.check();
        if (!this.fresh(t)) this.#host.changed();
        this.#armTick();
      },
      Math.max(1, next - now),
    );
    this.#tick.unref?.();
  }

  #armPeriodic(): void {
    if (this.#closed || this.#o.checkIntervalMs === 0) return;
    this.#periodic = this.#host.clock.setTimeout(() => {
      this.#periodic = undefined;
      void this.check().finally(() => this.#armPeriodic());
    }, this.#o.checkIntervalMs);
    this.#periodic.unref?.();
  }
}
