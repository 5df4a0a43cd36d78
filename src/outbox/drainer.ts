import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { describeError } from '../errors.ts';
import { encodeEvent } from '../events/codec.ts';
import type { EventEnvelope } from '../events/event.ts';
import { countOption, msOption, objectOption, oneOfOption } from '../options.ts';
import { backoffDelay } from '../util/backoff.ts';
import type { ClearEntries, OutboxEntry, OutboxStore } from './store.ts';

/**
 * How a batch goes out. 'batch': all of it at once (one channel keeps
 * order), then every confirm is awaited; one refusal fails the whole pass
 * and nothing is cleared (a transactional store clears the batch in one
 * commit). 'each': one entry at a time, cleared right after its confirm; the
 * first refusal ends the batch (counted, not thrown) and the rest waits.
 */
export type ConfirmMode = 'batch' | 'each';

export interface OutboxDrainerOptions<E extends OutboxEntry> {
  store: OutboxStore<E>;
  bus: Bus;
  clock?: Clock;
  /** Signs published events (CACHE_EVENT_SECRET). */
  eventSecret?: string | undefined;
  /** @default 'batch' */
  confirm?: ConfirmMode;
  /** Entries read per batch. @default 200 */
  batchSize?: number;
  /** Wait between passes while nothing fails: a poll finds what no kick announced. @default 1000 */
  idleMs?: number;
  /**
   * Wait after `failures` failed passes in a row.
   * @default failures => backoffDelay(failures - 1, 100, 5000)
   */
  retryDelayMs?: (failures: number) => number;
  /** Stamp the bus's instanceId on events as `origin`. @default false */
  stampOrigin?: boolean;
  /**
   * Skip passes while the bus is not up (counted as failed passes: retried
   * with backoff) and pass as soon as it is back up. @default false
   */
  waitForBus?: boolean;
  /** A pass threw; `attempt` counts failed passes in a row. For the owner's log line. */
  onPassFailed?: (err: unknown, attempt: number) => void;
  /** 'each' mode: the broker refused `entry` (it stays pending). For the owner's log line. */
  onPublishFailed?: (err: unknown, entry: E) => void;
}

export interface NormalizedDrainerOptions<E extends OutboxEntry> {
  store: OutboxStore<E>;
  bus: Bus;
  clock: Clock;
  eventSecret: string | undefined;
  confirm: ConfirmMode;
  batchSize: number;
  idleMs: number;
  retryDelayMs: (failures: number) => number;
  stampOrigin: boolean;
  waitForBus: boolean;
  onPassFailed: (err: unknown, attempt: number) => void;
  onPublishFailed: (err: unknown, entry: E) => void;
}

export function normalizeDrainerOptions<E extends OutboxEntry>(
  options: OutboxDrainerOptions<E>,
): NormalizedDrainerOptions<E> {
  objectOption('store', options.store);
  objectOption('bus', options.bus);
  return {
    store: options.store,
    bus: options.bus,
    clock: options.clock ?? systemClock,
    eventSecret: options.eventSecret || undefined,
    confirm: oneOfOption('confirm', options.confirm, ['batch', 'each'] as const, 'batch'),
    batchSize: countOption('batchSize', options.batchSize, 200),
    idleMs: msOption('idleMs', options.idleMs, 1000, 1),
    retryDelayMs: options.retryDelayMs ?? ((failures) => backoffDelay(failures - 1, 100, 5000)),
    stampOrigin: options.stampOrigin ?? false,
    waitForBus: options.waitForBus ?? false,
    onPassFailed: options.onPassFailed ?? (() => undefined),
    onPublishFailed: options.onPublishFailed ?? (() => undefined),
  };
}

/** One batch: 'busy' when another drainer holds the store, 'full' when more may wait. */
export type DrainResult = 'busy' | 'full' | 'done' | 'refused';

export interface DrainerStats {
  /** Events the broker confirmed (in 'batch' mode, counted once the store committed the clear). */
  published: number;
  /** 'each' mode: publishes the broker refused. */
  publish_failures: number;
  /** Passes that threw (broker in 'batch' mode, or the store). */
  pass_failures: number;
  last_error: string | null;
}

/**
 * The outbox pattern's second half, for any store: publishes committed
 * entries with publisher confirms and clears each only after the broker
 * acknowledged it. A crash between publish and clear republishes (replicas
 * drop the duplicate by version); a broker outage only delays events. Passes
 * repeat: at once after a kick (a new entry, the bus back up), after an idle
 * wait otherwise, and with jittered backoff after failures. A kick during a
 * pass asks for another pass right after it, unless the pass failed: then the
 * backoff is waited first, so a failing broker is not hammered.
 */
export class OutboxDrainer<E extends OutboxEntry> {
  readonly #o: NormalizedDrainerOptions<E>;
  readonly #stats: DrainerStats = { published: 0, publish_failures: 0, pass_failures: 0, last_error: null };
  #timer: ReturnType<Clock['setTimeout']> | undefined;
  #running: Promise<void> | undefined;
  #draining: Promise<DrainResult> | undefined;
  #again = false;
  #failures = 0;
  #started = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #unlisten: (() => void) | undefined;

  constructor(options: OutboxDrainerOptions<E>) {
    this.#o = normalizeDrainerOptions(options);
  }

  get stats(): DrainerStats {
    return { ...this.#stats };
  }

  /** Starts passing: entries left by a previous process, or by an outage, go out. Idempotent. */
  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    if (this.#o.waitForBus) {
      this.#unlisten = this.#o.bus.onStateChange((state) => {
        if (state === 'up') this.kick();
      });
    }
    this.kick();
  }

  /** Asks for a pass now (coalesced with one already running). Before start() it only marks one due. */
  kick(): void {
    if (this.#closed) return;
    this.#again = true;
    if (!this.#started || this.#running) return;
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#running = this.#pass().finally(() => {
      this.#running = undefined;
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#again && this.#failures === 0) {
      this.kick();
      return;
    }
    const delay = this.#failures > 0 ? this.#o.retryDelayMs(this.#failures) : this.#o.idleMs;
    this.#timer = this.#o.clock.setTimeout(() => this.kick(), delay);
    this.#timer.unref?.();
  }

  async #pass(): Promise<void> {
    this.#again = false;
    try {
      let settled: boolean;
      if (this.#o.waitForBus && this.#o.bus.state !== 'up') {
        settled = false;
      } else if (this.#o.confirm === 'batch') {
        // Drain until a batch comes back short (or another drainer holds the store).
        while ((await this.drainOnce()) === 'full');
        settled = true;
      } else {
        // One batch; anything left (a refusal, more than a batch, entries committed
        // meanwhile) is looked at again after a short backoff, not the idle wait.
        await this.drainOnce();
        settled = (await this.#o.store.pending()) === 0;
      }
      this.#failures = settled ? 0 : this.#failures + 1;
      if (settled) await this.#o.store.tidy?.();
    } catch (err) {
      this.#failures++;
      this.#stats.pass_failures++;
      this.#stats.last_error = describeError(err);
      this.#o.onPassFailed(err, this.#failures);
    }
  }

  /**
   * Publishes one batch of the oldest entries (coalesced with one in
   * progress). 'busy' when another drainer holds the store, 'full' when more
   * may wait, 'refused' when the broker refused an entry in 'each' mode,
   * 'done' otherwise. Throws when the store fails, and in 'batch' mode when
   * a publish fails (nothing of the batch is cleared).
   */
  drainOnce(): Promise<DrainResult> {
    if (this.#draining) return this.#draining;
    const draining = this.#drainBatch().finally(() => {
      if (this.#draining === draining) this.#draining = undefined;
    });
    this.#draining = draining;
    return draining;
  }

  async #drainBatch(): Promise<DrainResult> {
    const limit = this.#o.batchSize;
    if (this.#o.confirm === 'batch') {
      const sent = await this.#o.store.batch(limit, async (entries, clear) => {
        // One channel keeps order: publish all, then wait for every confirm.
        const results = await Promise.allSettled(entries.map((entry) => this.#send(entry)));
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        if (entries.length > 0) await clear(entries);
        return entries.length;
      });
      if (sent === 'busy') return 'busy';
      this.#stats.published += sent;
      return sent === limit ? 'full' : 'done';
    }
    return this.#o.store.batch(limit, async (entries, clear): Promise<DrainResult> => {
      for (const entry of entries) {
        if (this.#closed) return 'done';
        if (!(await this.#publishOne(entry, clear))) return 'refused';
      }
      return entries.length === limit ? 'full' : 'done';
    });
  }

  /**
   * Publishes a just-committed entry at once and clears it after the confirm.
   * Waits at most `waitMs`: false when the entry was not confirmed by then
   * (or the bus is not up), and a pass is asked for; the entry stays pending.
   */
  async publishNow(entry: E, waitMs: number): Promise<boolean> {
    if (this.#o.bus.state !== 'up') {
      this.kick();
      return false;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), waitMs);
    });
    try {
      const published = await Promise.race([
        this.#publishOne(entry, (sent) => this.#o.store.clear(sent)),
        timeout,
      ]);
      if (!published) this.kick();
      return published;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes one entry and clears it; false when the broker refused it (it stays pending). */
  async #publishOne(entry: E, clear: ClearEntries<E>): Promise<boolean> {
    try {
      await this.#send(entry);
      this.#stats.published++;
    } catch (err) {
      this.#stats.publish_failures++;
      this.#o.onPublishFailed(err, entry);
      return false;
    }
    try {
      await clear([entry]);
    } catch {
      // Published but still pending: a later pass publishes it again, a harmless duplicate.
    }
    return true;
  }

  #send(entry: E): Promise<void> {
    const envelope: EventEnvelope = {
      version: entry.version,
      ...(entry.epoch === undefined ? {} : { epoch: entry.epoch }),
      published_at: this.#o.clock.now(),
    };
    if (this.#o.stampOrigin) envelope.origin = this.#o.bus.instanceId;
    const { body, headers } = encodeEvent(entry.payload, envelope, this.#o.eventSecret);
    return this.#o.bus.publish(entry.topic, body, { headers });
  }

  /** Stops passing after the pass in flight; pending entries stay in the store. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#unlisten?.();
      if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
      await this.#running;
      await this.#draining?.catch(() => undefined);
    })();
    return this.#closing;
  }
}
