import type { Clock, TimerHandle } from '../clock.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Dataset } from './dataset.ts';
import { comparableFrom } from './digest.ts';
import type { Generation, VersionedEvent } from './generation.ts';
import { decodeChange } from './incoming.ts';
import type { SnapshotSource, SourceState } from './source.ts';

export type GapReason = 'gap' | 'behind';

export interface GapRepairHost<V> {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly dataset: Dataset<V>;
  readonly source: SnapshotSource<V>;
  readonly gapWaitMs: number;
  /** Held events past which a gap is repaired at once. */
  readonly maxHeld: number;
  serving(): Generation<V> | undefined;
  /** A load is running, or the replica is closing: nothing to repair now. */
  busy(): boolean;
  offer(gen: Generation<V>, event: VersionedEvent<V>): void;
  /** The log could not repair it: reload. */
  resync(reason: GapReason | 'diverged'): void;
  started(reason: GapReason): void;
  repaired(
    reason: GapReason,
    state: SourceState | undefined,
    readAt: number,
    fromBucket: number,
    from: number,
  ): void;
  /** A version missing for gapWaitMs. */
  gap(): void;
}

/**
 * Lost events: a version still missing `gapWaitMs` after the oldest event
 * waiting past it arrived, or one a read showed the source has. Repaired from
 * the source's change log when it has one (a read, not a load of the whole
 * dataset; a million revocations take seconds to load), else by a reload.
 */
export class GapRepair<V> {
  readonly #host: GapRepairHost<V>;
  #timer: TimerHandle | undefined;
  #running: Promise<void> | undefined;

  constructor(host: GapRepairHost<V>) {
    this.#host = host;
  }

  /** After events were offered to the serving generation: arms, keeps or clears the gap timer. */
  watch(gen: Generation<V>): void {
    const h = this.#host;
    if (gen.held === 0) return this.clear();
    if (gen.held > h.maxHeld) {
      this.clear();
      return this.catchUp('gap', gen.firstHeld!);
    }
    if (this.#timer) return;
    // A gap is as old as the longest-waiting event past it, however many versions flow meanwhile.
    const due = (gen.oldestHeldAt ?? h.clock.now()) + h.gapWaitMs;
    this.#timer = h.clock.setTimeout(
      () => {
        this.#timer = undefined;
        if (gen !== h.serving() || gen.held === 0 || h.busy()) return;
        if ((gen.oldestHeldAt ?? Infinity) + h.gapWaitMs > h.clock.now()) return this.watch(gen);
        h.gap();
        h.logger.warn(
          { local: gen.version, received: gen.firstHeld, waitedMs: h.gapWaitMs },
          'version gap: repairing',
        );
        this.catchUp('gap', gen.firstHeld! - 1);
      },
      Math.max(0, due - h.clock.now()),
    );
    this.#timer.unref?.();
  }

  clear(): void {
    if (this.#timer) this.#host.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  get running(): boolean {
    return this.#running !== undefined;
  }

  /** Brings the serving generation to `target` (or the source's version) from the log; else reloads. */
  catchUp(reason: GapReason, target: number): void {
    const h = this.#host;
    const gen = h.serving();
    if (h.busy() || this.#running || !gen) return;
    if (!h.source.changesSince) return h.resync(reason);
    h.started(reason);
    this.#running = this.#run(gen, reason, target).finally(() => {
      this.#running = undefined;
    });
  }

  async #run(gen: Generation<V>, reason: GapReason, target: number): Promise<void> {
    const h = this.#host;
    const readAt = h.clock.now();
    const fromBucket = comparableFrom(readAt);
    const from = gen.version;
    const result = await h.source.changesSince!(gen.epoch, from, fromBucket).catch((err: unknown) => {
      h.logger.warn({ err: describeError(err) }, 'catch-up read failed');
      return undefined;
    });
    if (gen !== h.serving() || h.busy()) return;
    if (!result || result.epoch !== gen.epoch) return h.resync(reason);
    try {
      for (const c of result.changes) {
        const change = decodeChange(h.dataset, c.event);
        h.offer(gen, { version: c.version, epoch: result.epoch, change, origin: 'source' });
      }
    } catch (err) {
      h.logger.warn({ err: describeError(err) }, 'source log entry rejected: reloading');
      return h.resync(reason);
    }
    if (gen.reloadAt !== undefined || h.busy()) return;
    if (result.state) {
      // Held versions that came before the read and that the source does not have were never
      // committed: forged. Taken back. (One that came after may be a commit since the read.)
      const forged = gen.dropHeldAbove(result.state.version, readAt);
      if (forged > 0)
        h.logger.warn({ forged, source: result.state.version }, 'dropped versions the source never had');
    }
    if (gen.version < Math.min(target, result.state?.version ?? target)) return h.resync(reason);
    this.watch(gen);
    h.repaired(reason, result.state, readAt, fromBucket, from);
  }

  /** Waits for the catch-up in flight. */
  async close(): Promise<void> {
    this.clear();
    await this.#running;
  }
}
