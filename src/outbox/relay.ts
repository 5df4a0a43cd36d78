import pg from 'pg';
import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { countOption, msOption, numberOption, objectOption } from '../options.ts';
import { backoffDelay } from '../util/backoff.ts';
import { OutboxDrainer } from './drainer.ts';
import { OUTBOX_CHANNEL } from './outbox.ts';
import type { PostgresOutboxEntry } from './postgres-store.ts';
import { PostgresOutboxStore } from './postgres-store.ts';

export interface OutboxRelayOptions {
  pool: pg.Pool;
  bus: Bus;
  /** For the LISTEN connection; defaults to the pool's own settings. */
  listenConfig?: pg.ClientConfig;
  clock?: Clock;
  logger?: Logger;
  /** Poll even without a NOTIFY (covers a lost LISTEN connection). @default 1000 */
  pollIntervalMs?: number;
  /** Rows published per transaction. @default 200 */
  batchSize?: number;
  /** Sent rows older than this are deleted. @default 86400000 (a day) */
  retentionMs?: number;
  /** First retry delay after a failed batch (doubling, jittered, up to 5 s). @default 100 */
  retryBaseMs?: number;
  /** Signs published events (CACHE_EVENT_SECRET). */
  eventSecret?: string | undefined;
  /**
   * Larger events (a big import's full_refresh) go out as a small reload
   * marker at their version: replicas load the source instead, and the relay
   * never holds a huge row in memory or hits the broker's message limit.
   * @default 8 MiB
   */
  maxEventBytes?: number;
}

export interface NormalizedRelayOptions {
  pool: pg.Pool;
  bus: Bus;
  listenConfig: pg.ClientConfig | undefined;
  clock: Clock;
  logger: Logger;
  pollIntervalMs: number;
  batchSize: number;
  retentionMs: number;
  retryBaseMs: number;
  eventSecret: string | undefined;
  maxEventBytes: number;
}

/** Merges the defaults and checks ranges (OptionTypeError / OptionRangeError at construction). */
export function normalizeRelayOptions(options: OutboxRelayOptions): NormalizedRelayOptions {
  objectOption('pool', options.pool);
  objectOption('bus', options.bus);
  return {
    pool: options.pool,
    bus: options.bus,
    listenConfig: options.listenConfig,
    clock: options.clock ?? systemClock,
    logger: (options.logger ?? silentLogger).child({ component: 'outbox-relay' }),
    pollIntervalMs: msOption('pollIntervalMs', options.pollIntervalMs, 1000, 1),
    batchSize: countOption('batchSize', options.batchSize, 200),
    retentionMs: numberOption('retentionMs', options.retentionMs, 86_400_000),
    retryBaseMs: msOption('retryBaseMs', options.retryBaseMs, 100),
    eventSecret: options.eventSecret || undefined,
    maxEventBytes: countOption('maxEventBytes', options.maxEventBytes, 8 * 1024 * 1024),
  };
}

export interface RelayStats {
  published: number;
  /** Events too large to send, published as reload markers. */
  reload_markers: number;
  failures: number;
  last_error: string | null;
}

/**
 * Publishes committed outbox rows (the PostgreSQL store under the outbox
 * drainer) and wakes on the outbox's NOTIFY. Rows are marked sent only
 * after the broker acknowledged them. Safe to run in every process: an
 * advisory lock lets one relay publish at a time, in version order.
 */
export class OutboxRelay {
  readonly #o: NormalizedRelayOptions;
  readonly #drainer: OutboxDrainer<PostgresOutboxEntry>;
  readonly #store: PostgresOutboxStore;
  #listener: pg.Client | undefined;
  /** The #listen() in progress, if any: close() waits for it. */
  #listening: Promise<void> | undefined;
  #started = false;
  #closing: Promise<void> | undefined;
  #reloadMarkers = 0;

  constructor(options: OutboxRelayOptions) {
    const o = normalizeRelayOptions(options);
    this.#o = o;
    this.#store = new PostgresOutboxStore({
      pool: o.pool,
      clock: o.clock,
      retentionMs: o.retentionMs,
      maxEventBytes: o.maxEventBytes,
      onReloadMarker: () => this.#reloadMarkers++,
    });
    this.#drainer = new OutboxDrainer({
      store: this.#store,
      bus: o.bus,
      clock: o.clock,
      eventSecret: o.eventSecret,
      confirm: 'batch',
      batchSize: o.batchSize,
      idleMs: o.pollIntervalMs,
      retryDelayMs: (failures) => backoffDelay(failures - 1, o.retryBaseMs, 5000),
      stampOrigin: true,
      onPassFailed: (err, attempt) =>
        o.logger.warn({ err: describeError(err), attempt }, 'outbox relay batch failed; will retry'),
    });
  }

  get stats(): RelayStats {
    const { published, pass_failures, last_error } = this.#drainer.stats;
    return { published, reload_markers: this.#reloadMarkers, failures: pass_failures, last_error };
  }

  /** Starts listening and polling. Idempotent. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#listen();
    if (!this.#closing) this.#drainer.start();
  }

  #listen(): Promise<void> {
    if (this.#closing) return Promise.resolve();
    const listening = this.#connectListener().finally(() => {
      if (this.#listening === listening) this.#listening = undefined;
    });
    this.#listening = listening;
    return listening;
  }

  async #connectListener(): Promise<void> {
    const { clock, logger, pollIntervalMs } = this.#o;
    const client = new pg.Client(
      this.#o.listenConfig ?? (this.#o.pool as unknown as { options: pg.ClientConfig }).options,
    );
    client.on('notification', () => this.kick());
    client.on('error', (err) => {
      logger.warn({ err: describeError(err) }, 'outbox LISTEN connection lost; polling until it is back');
      this.#listener = undefined;
      client.end().catch(() => undefined);
      clock.setTimeout(() => void this.#listen(), pollIntervalMs).unref?.();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${OUTBOX_CHANNEL}`);
      // close() ran while this connected: it did not see this client, so it is ended here.
      if (this.#closing) {
        await client.end().catch(() => undefined);
        return;
      }
      this.#listener = client;
    } catch (err) {
      if (this.#closing) {
        await client.end().catch(() => undefined);
        return;
      }
      logger.warn({ err: describeError(err) }, 'outbox LISTEN failed; polling');
      await client.end().catch(() => undefined);
      clock.setTimeout(() => void this.#listen(), pollIntervalMs * 2).unref?.();
    }
  }

  /** Asks for a drain now (coalesced with one already running). */
  kick(): void {
    this.#drainer.kick();
  }

  /**
   * Publishes one batch: 'busy' when another relay holds the lock, 'full' when
   * more rows may be waiting, 'done' otherwise. Throws when publishing fails
   * (the rows stay unsent).
   */
  async drainOnce(): Promise<'busy' | 'full' | 'done'> {
    const result = await this.#drainer.drainOnce();
    // 'refused' is the drainer's 'each' mode; in 'batch' mode a refusal throws.
    return result === 'refused' ? 'done' : result;
  }

  /** Number of committed events not yet published. */
  pending(): Promise<number> {
    return this.#store.pending();
  }

  /** Stops polling and listening, finishing the batch in flight. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#drainer.close();
      await this.#listening;
      await this.#listener?.end().catch(() => undefined);
      this.#listener = undefined;
    })();
    return this.#closing;
  }
}
