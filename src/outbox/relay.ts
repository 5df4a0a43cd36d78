import pg from 'pg';
import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { withTransaction } from '../db/transaction.ts';
import { describeError } from '../errors.ts';
import { encodeEvent } from '../events/codec.ts';
import { RELOAD_TYPE } from '../events/control.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { backoffDelay } from '../util/backoff.ts';
import { OUTBOX_CHANNEL } from './outbox.ts';

/**
 * Only one relay per outbox publishes at a time, so events leave in version
 * order. Keyed by the outbox table itself too (the one search_path resolves):
 * an outbox in another schema of the same database must not make this one's
 * relays wait or skip a turn.
 */
const RELAY_LOCK = 7_240_002;

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

export interface RelayStats {
  published: number;
  /** Events too large to send, published as reload markers. */
  reload_markers: number;
  failures: number;
  last_error: string | null;
}

/**
 * Publishes committed outbox rows with publisher confirms and marks them sent
 * only after the broker acknowledged them. A crash between publish and mark
 * republishes (replicas drop the duplicate by version); a broker outage only
 * delays events. Safe to run in every process: an advisory lock lets one
 * relay publish at a time, in version order.
 */
export class OutboxRelay {
  readonly #pool: pg.Pool;
  readonly #bus: Bus;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #pollIntervalMs: number;
  readonly #batchSize: number;
  readonly #retentionMs: number;
  readonly #retryBaseMs: number;
  readonly #secret: string | undefined;
  readonly #maxEventBytes: number;
  readonly #listenConfig: pg.ClientConfig | undefined;
  #listener: pg.Client | undefined;
  /** The #listen() in progress, if any: close() waits for it. */
  #listening: Promise<void> | undefined;
  #timer: ReturnType<Clock['setTimeout']> | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #failures = 0;
  #started = false;
  #closing: Promise<void> | undefined;
  #lastCleanup = 0;
  readonly #stats: RelayStats = { published: 0, reload_markers: 0, failures: 0, last_error: null };

  constructor(options: OutboxRelayOptions) {
    this.#pool = options.pool;
    this.#bus = options.bus;
    this.#clock = options.clock ?? systemClock;
    this.#log = (options.logger ?? silentLogger).child({ component: 'outbox-relay' });
    this.#pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.#batchSize = options.batchSize ?? 200;
    this.#retentionMs = options.retentionMs ?? 86_400_000;
    this.#retryBaseMs = options.retryBaseMs ?? 100;
    this.#secret = options.eventSecret || undefined;
    this.#maxEventBytes = options.maxEventBytes ?? 8 * 1024 * 1024;
    this.#listenConfig = options.listenConfig;
    if (this.#pollIntervalMs <= 0 || this.#batchSize <= 0 || this.#maxEventBytes <= 0)
      throw new RangeError('pollIntervalMs, batchSize and maxEventBytes must be > 0');
  }

  get stats(): RelayStats {
    return { ...this.#stats };
  }

  /** Starts listening and polling. Idempotent. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#listen();
    this.kick();
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
    const client = new pg.Client(
      this.#listenConfig ?? (this.#pool as unknown as { options: pg.ClientConfig }).options,
    );
    client.on('notification', () => this.kick());
    client.on('error', (err) => {
      this.#log.warn({ err: describeError(err) }, 'outbox LISTEN connection lost; polling until it is back');
      this.#listener = undefined;
      client.end().catch(() => undefined);
      this.#clock.setTimeout(() => void this.#listen(), this.#pollIntervalMs).unref?.();
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
      this.#log.warn({ err: describeError(err) }, 'outbox LISTEN failed; polling');
      await client.end().catch(() => undefined);
      this.#clock.setTimeout(() => void this.#listen(), this.#pollIntervalMs * 2).unref?.();
    }
  }

  /** Asks for a drain now (coalesced with one already running). */
  kick(): void {
    if (this.#closing) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#running = this.#loop().finally(() => {
      this.#running = undefined;
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#closing || !this.#started) return;
    const delay =
      this.#failures > 0 ? backoffDelay(this.#failures - 1, this.#retryBaseMs, 5000) : this.#pollIntervalMs;
    if (this.#again && this.#failures === 0) {
      this.#again = false;
      this.kick();
      return;
    }
    this.#timer = this.#clock.setTimeout(() => this.kick(), delay);
    this.#timer.unref?.();
  }

  async #loop(): Promise<void> {
    try {
      // Drain until a batch comes back short.
      for (;;) {
        const result = await this.drainOnce();
        if (result !== 'full') break;
      }
      this.#failures = 0;
      await this.#cleanup();
    } catch (err) {
      this.#failures++;
      this.#stats.failures++;
      this.#stats.last_error = describeError(err);
      this.#log.warn(
        { err: describeError(err), attempt: this.#failures },
        'outbox relay batch failed; will retry',
      );
    }
  }

  /**
   * Publishes one batch: 'busy' when another relay holds the lock, 'full' when
   * more rows may be waiting, 'done' otherwise. Throws when publishing fails
   * (the rows stay unsent).
   */
  async drainOnce(): Promise<'busy' | 'full' | 'done'> {
    // A failed publish throws out of the transaction: nothing is marked sent.
    const published = await withTransaction(this.#pool, async (client) => {
      const { rows: lock } = await client.query<{ ok: boolean }>(
        `SELECT pg_try_advisory_xact_lock($1, to_regclass('cachecast_outbox')::oid::int) AS ok`,
        [RELAY_LOCK],
      );
      if (!lock[0]?.ok) return 'busy' as const;
      const { rows } = await client.query<{
        id: string;
        dataset: string;
        version: string;
        epoch: string | null;
        topic: string;
        payload: string | null;
      }>(
        // Qualified: an unqualified ORDER BY would sort by the text aliases (1, 10, 100, 2, ...).
        // A payload over the limit is not even read: it goes out as a reload marker.
        `SELECT o.id::text AS id, o.dataset, o.version::text AS version, o.epoch, o.topic,
           CASE WHEN octet_length(o.payload) > $2 THEN NULL ELSE o.payload END AS payload
         FROM cachecast_outbox o WHERE o.sent_at IS NULL ORDER BY o.dataset, o.version LIMIT $1`,
        [this.#batchSize, this.#maxEventBytes],
      );
      // One channel keeps order: publish all, then wait for every confirm.
      const publishes = rows.map((row) => {
        const payload =
          row.payload === null
            ? { type: RELOAD_TYPE, dataset: row.dataset }
            : (JSON.parse(row.payload) as Record<string, unknown>);
        if (row.payload === null) this.#stats.reload_markers++;
        const { body, headers } = encodeEvent(
          payload,
          {
            version: Number(row.version),
            epoch: row.epoch ?? undefined,
            published_at: this.#clock.now(),
            origin: this.#bus.instanceId,
          },
          this.#secret,
        );
        return this.#bus.publish(row.topic, body, { headers });
      });
      const results = await Promise.allSettled(publishes);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      if (rows.length > 0) {
        await client.query('UPDATE cachecast_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])', [
          rows.map((r) => r.id),
        ]);
      }
      return rows.length;
    });
    if (published === 'busy') return 'busy';
    this.#stats.published += published;
    return published === this.#batchSize ? 'full' : 'done';
  }

  async #cleanup(): Promise<void> {
    const now = this.#clock.now();
    if (now - this.#lastCleanup < 60_000) return;
    this.#lastCleanup = now;
    await this.#pool.query(
      `DELETE FROM cachecast_outbox WHERE sent_at IS NOT NULL AND sent_at < now() - ($1::bigint * interval '1 millisecond')`,
      [this.#retentionMs],
    );
  }

  /** Number of committed events not yet published. */
  async pending(): Promise<number> {
    const { rows } = await this.#pool.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM cachecast_outbox WHERE sent_at IS NULL',
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** Stops polling and listening, finishing the batch in flight. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#timer) this.#clock.clearTimeout(this.#timer);
      await this.#running;
      await this.#listening;
      await this.#listener?.end().catch(() => undefined);
      this.#listener = undefined;
    })();
    return this.#closing;
  }
}
