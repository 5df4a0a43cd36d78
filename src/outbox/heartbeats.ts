import type { Bus } from '../bus/bus.ts';
import type { Clock, TimerHandle } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { describeError } from '../errors.ts';
import { encodeEvent } from '../events/codec.ts';
import { heartbeatPayload } from '../events/control.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { msOption } from '../options.ts';
import { comparableFrom, DIGEST_BUCKET_S } from '../replica/digest.ts';
import type { SourceState } from '../replica/source.ts';

export interface HeartbeatOptions {
  bus: Bus;
  /** The dataset's exchange, e.g. "character.cache". */
  topic: string;
  /** The dataset's name, e.g. "catalog". */
  dataset: string;
  /** Reads the source's state (one cheap read); `fromBucket` as in SnapshotSource.state. */
  read(fromBucket: number): Promise<SourceState>;
  /** The dataset's entries expire: the digest covers the buckets from comparableFrom(now). */
  expiring: boolean;
  /** @default 250 */
  intervalMs?: number;
  /**
   * Called when the source reports committed events still unpublished on two
   * reads in a row: their writer may have lost its broker link, so this one
   * publishes them (the outbox relay, the revocation drainer).
   */
  onPending?: () => void;
  clock?: Clock;
  logger?: Logger;
  eventSecret?: string | undefined;
}

/**
 * The writing side's half of the bound on silent staleness: every
 * `intervalMs` while the bus is up, it reads the source's `(epoch, version,
 * digest)` and publishes it on the dataset's exchange. A replica holding that
 * state has proof it is current; one that hears no heartbeat for
 * `staleCheckMs` reads the source itself. Heartbeats are transient (not on
 * disk, expiring in queues): a late one is worthless.
 */
export class HeartbeatPublisher {
  readonly #o: Required<Omit<HeartbeatOptions, 'onPending' | 'eventSecret'>> &
    Pick<HeartbeatOptions, 'onPending' | 'eventSecret'>;
  #timer: TimerHandle | undefined;
  #running: Promise<void> | undefined;
  #closed = false;
  #pendingBefore = false;
  readonly #stats = { published: 0, failures: 0 };

  constructor(options: HeartbeatOptions) {
    this.#o = {
      clock: systemClock,
      logger: silentLogger,
      ...options,
      intervalMs: msOption('intervalMs', options.intervalMs, 250, 1),
    };
  }

  get stats(): { published: number; failures: number } {
    return { ...this.#stats };
  }

  start(): void {
    if (this.#closed || this.#timer || this.#running) return;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.beat().finally(() => {
        this.#running = undefined;
        this.#schedule();
      });
    }, this.#o.intervalMs);
    this.#timer.unref?.();
  }

  /** One heartbeat now (skipped while the bus is down: nobody would hear it). */
  async beat(): Promise<void> {
    const { bus, clock } = this.#o;
    if (bus.state !== 'up') return;
    const readAt = clock.now();
    const fromBucket = this.#o.expiring ? comparableFrom(readAt) : -Infinity;
    try {
      const state = await this.#o.read(fromBucket);
      const pending = (state.pending ?? 0) > 0;
      if (pending && this.#pendingBefore) this.#o.onPending?.();
      this.#pendingBefore = pending;
      const payload = heartbeatPayload({
        dataset: this.#o.dataset,
        epoch: state.epoch,
        version: state.version,
        digest: state.digest,
        digestFrom: this.#o.expiring ? fromBucket * DIGEST_BUCKET_S : undefined,
        readAt,
      });
      const { body, headers } = encodeEvent(
        payload,
        { version: state.version, epoch: state.epoch, published_at: clock.now(), origin: bus.instanceId },
        this.#o.eventSecret,
      );
      await bus.publish(this.#o.topic, body, { headers, transient: { expiresMs: 2000 } });
      this.#stats.published++;
    } catch (err) {
      this.#stats.failures++;
      this.#o.logger.debug({ err: describeError(err) }, 'heartbeat not published');
    }
  }

  /** Stops; waits for the heartbeat in flight. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
    await this.#running;
  }
}
