import type { Clock } from '../clock.ts';
import type { Logger } from '../logger.ts';
import { backoffDelay } from '../util/backoff.ts';
import { Pauses } from '../util/pauses.ts';
import type { Dataset } from './dataset.ts';
import type { EntryHasher, ReplicaEvent, VersionedEvent } from './generation.ts';
import { Generation } from './generation.ts';
import { decodeChange } from './incoming.ts';
import type { SnapshotSource, SourceChange } from './source.ts';
import { Store } from './store.ts';

export type ResyncReason =
  | 'start'
  | 'reconnect'
  | 'gap'
  | 'behind'
  | 'ahead'
  | 'epoch'
  | 'diverged'
  | 'reload'
  | 'buffer-overflow'
  | 'manual';

/** Reasons that mean the serving data is known to be wrong or behind: `degraded` until the swap. */
export const REPAIR_REASONS: ReadonlySet<ResyncReason> = new Set([
  'gap',
  'behind',
  'ahead',
  'epoch',
  'diverged',
  'reload',
  'buffer-overflow',
]);

export interface ResyncHost<V> {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly dataset: Dataset<V>;
  readonly source: SnapshotSource<V>;
  readonly hasher: EntryHasher<V> | undefined;
  readonly maxBufferedEvents: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Backoff jitter in [0, 1). */
  readonly random: () => number;
  /** Simulator mutant: replay the buffered events in arrival order and reload at the first gap. */
  readonly arrivalOrder: boolean;
  isLive(value: V): boolean;
  closing(): boolean;
  /** The serving generation's events still waiting past a gap: they may be newer than the snapshot. */
  waiting(): Array<VersionedEvent<V>>;
  /** Events that arrived in `epoch` before this replica knew it (a new epoch's first events). */
  takeEpochEvents(epoch: string): Array<VersionedEvent<V>>;
  /** Offers, early-applies and releases one event on a generation (the live path's rules). */
  offer(gen: Generation<V>, event: VersionedEvent<V>): void;
  /** Called as a load begins; what it returns tells, at the swap, whether the bus stayed up meanwhile. */
  beginLoad(): () => boolean;
  swap(
    gen: Generation<V>,
    done: { reason: ResyncReason; startedAt: number; busStayedUp: boolean; unversioned: boolean },
  ): void;
  failed(err: unknown, reason: ResyncReason, retryInMs: number): void;
  /** Counts a load thrown away because events between it and the buffer were lost. */
  gap(): void;
}

/** Events received while a snapshot loads: they may be newer than it. */
class ResyncLog<V> {
  readonly versioned = new Map<string, VersionedEvent<V>>();
  readonly unversioned: Array<ReplicaEvent<V>> = [];
  readonly arrival: Array<ReplicaEvent<V>> = [];
  overflowed = false;

  constructor(private readonly max: number) {}

  add(event: ReplicaEvent<V>): void {
    if (this.overflowed) return;
    if (this.versioned.size + this.unversioned.length >= this.max) {
      // Past the bound the events are dropped; the snapshot is then loaded again.
      this.overflowed = true;
      this.versioned.clear();
      this.unversioned.length = 0;
      this.arrival.length = 0;
      return;
    }
    this.arrival.push(event);
    if (event.version === undefined) this.unversioned.push(event);
    else this.versioned.set(`${event.epoch ?? ''}:${event.version}`, event as VersionedEvent<V>);
  }
}

/**
 * The resync loop: loads a snapshot into a new generation off to the side,
 * rebases onto it the events that arrived meanwhile (in version order,
 * through the same sequencer as the live path: a version still missing just
 * waits, it does not restart the load), and swaps it in. Single-flight:
 * requests during a run schedule one more round. A failing source is retried
 * with backoff while the old generation keeps serving.
 */
export class Resync<V> {
  readonly #host: ResyncHost<V>;
  readonly #pauses: Pauses;
  #running: Promise<void> | undefined;
  #again: ResyncReason | undefined;
  #log: ResyncLog<V> | undefined;
  #active = false;

  constructor(host: ResyncHost<V>) {
    this.#host = host;
    this.#pauses = new Pauses(host.clock);
  }

  /** True from the request until the swap (or the give-up), synchronously. */
  get running(): boolean {
    return this.#active;
  }

  /** Every event received while a load runs goes here too. */
  record(event: ReplicaEvent<V>): void {
    this.#log?.add(event);
  }

  request(reason: ResyncReason): Promise<void> {
    if (this.#host.closing()) return Promise.resolve();
    if (this.#active && this.#running) {
      this.#again ??= reason;
      return this.#running;
    }
    this.#active = true;
    const run = this.#run(reason);
    this.#running = run;
    return run;
  }

  /** Ends backoff pauses; the run in flight finishes its load and stops. */
  async close(): Promise<void> {
    this.#pauses.stop();
    await this.#running?.catch(() => undefined);
  }

  async #run(first: ResyncReason): Promise<void> {
    try {
      await this.#loop(first);
    } finally {
      this.#active = false;
      this.#log = undefined;
    }
  }

  async #loop(first: ResyncReason): Promise<void> {
    const host = this.#host;
    let reason = first;
    let failures = 0;
    while (!host.closing()) {
      this.#again = undefined;
      // Every event received before the load reads the version is covered by the snapshot.
      const log = new ResyncLog<V>(host.maxBufferedEvents);
      for (const event of host.waiting()) log.add(event);
      this.#log = log;
      const startedAt = host.clock.now();
      const busStayedUp = host.beginLoad();
      let gen: Generation<V>;
      let changes: SourceChange[];
      try {
        const store = new Store(host.dataset);
        const result = await host.source.load((key, value) => {
          if (host.isLive(value)) store.load(key, value);
        });
        if (host.closing()) return;
        changes = result.changes ?? [];
        gen = new Generation({
          dataset: host.dataset,
          hasher: host.hasher,
          epoch: result.epoch ?? '',
          version: result.version,
          store,
          digest: result.digest,
          now: () => host.clock.now(),
        });
      } catch (err) {
        const delay = backoffDelay(failures++, host.retryBaseMs, host.retryMaxMs, host.random);
        host.failed(err, reason, delay);
        await this.#pauses.pause(delay);
        continue;
      }
      if (log.overflowed || !this.#rebase(gen, log, changes)) {
        reason = log.overflowed ? 'buffer-overflow' : 'gap';
        host.gap();
        await this.#pauses.pause(
          backoffDelay(Math.min(failures++, 3), host.retryBaseMs, host.retryMaxMs, host.random),
        );
        continue;
      }
      host.swap(gen, {
        reason,
        startedAt,
        busStayedUp: busStayedUp(),
        unversioned: log.unversioned.length > 0,
      });
      if (gen.reloadAt !== undefined) this.#again ??= 'reload';
      if (this.#again === undefined) {
        // In the same tick as the decision: a request from now on starts a new run, none is lost.
        this.#active = false;
        return;
      }
      reason = this.#again;
    }
  }

  /** Replays the log onto the new generation; false when the load must start over (arrival-order mutant). */
  #rebase(gen: Generation<V>, log: ResyncLog<V>, changes: SourceChange[]): boolean {
    const host = this.#host;
    // The source's own changes first: the bus's copies of those versions are then duplicates.
    for (const c of changes) {
      host.offer(gen, {
        version: c.version,
        epoch: gen.epoch,
        change: decodeChange(host.dataset, c.event),
        origin: 'source',
      });
    }
    if (host.arrivalOrder) return this.#rebaseInArrivalOrder(gen, log);
    for (const event of log.unversioned) gen.applyUnversioned(event.change);
    for (const event of log.versioned.values()) {
      if (event.epoch === undefined || event.epoch === gen.epoch) host.offer(gen, event);
    }
    for (const event of host.takeEpochEvents(gen.epoch)) host.offer(gen, event);
    return true;
  }

  /** The protocol before sequencing: events in arrival order, the first one out of line is a gap. */
  #rebaseInArrivalOrder(gen: Generation<V>, log: ResyncLog<V>): boolean {
    for (const event of log.arrival) {
      if (event.version === undefined) {
        gen.applyUnversioned(event.change);
        continue;
      }
      if (event.version <= gen.version) continue;
      if (event.version !== gen.version + 1) return false;
      this.#host.offer(gen, event as VersionedEvent<V>);
    }
    return true;
  }

  /** Stops a backoff pause early (the source is back, the bus reconnected). */
  wake(): void {
    this.#pauses.wake();
  }
}
