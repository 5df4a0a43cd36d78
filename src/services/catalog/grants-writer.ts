import type { AsyncMessage, Connection, Consumer, Publisher } from 'rabbitmq-client';
import type pg from 'pg';
import { z } from 'zod';
import { grantId } from '../../catalog/grant-id.ts';
import type { GrantMessage } from '../../catalog/grant.ts';
import { GRANTS_QUEUE } from '../../catalog/grant.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { isWellFormedText } from '../../util/text.ts';

export const GRANTS_DLQ = `${GRANTS_QUEUE}.dlq`;

const grantSchema = z.object({
  // A lone surrogate (JSON can carry "\ud800") has no UTF-8 form: PostgreSQL would store U+FFFD
  // instead, and no cache key can be built from it.
  user_id: z
    .string()
    .min(1)
    .max(200)
    .refine(isWellFormedText, 'user_id is not well-formed UTF-16 (a lone surrogate)'),
  character_id: z.uuid(),
  character_code: z.string().max(200),
  task_id: z.string().max(200),
  granted_at: z.iso.datetime({ offset: true }),
});

export interface GrantsWriterOptions {
  connection: Connection;
  pool: pg.Pool;
  logger?: Logger;
  /** Grants written per transaction. @default 100 */
  batchSize?: number;
  /** How long a partial batch waits for company. @default 20 */
  lingerMs?: number;
  /** Called with the user ids of each committed batch (e.g. to invalidate their cached collections). */
  onCommitted?: (userIds: string[]) => void | Promise<void>;
}

interface Pending {
  grant: GrantMessage;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Persists the grants the match worker publishes (seed 002 #11-12): in
 * batches, idempotently (a deterministic id per user and character, ON
 * CONFLICT DO NOTHING), acknowledging each message only after its batch
 * committed. A malformed message goes to `character.grants.dlq`.
 */
export class GrantsWriter {
  readonly #o: Required<Omit<GrantsWriterOptions, 'onCommitted' | 'logger'>> &
    Pick<GrantsWriterOptions, 'onCommitted'> & { logger: Logger };
  #consumer: Consumer | undefined;
  #dlq: Publisher | undefined;
  #batch: Pending[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  readonly stats = { written: 0, duplicates: 0, dead_lettered: 0, batches: 0, failures: 0 };

  constructor(options: GrantsWriterOptions) {
    this.#o = {
      batchSize: 100,
      lingerMs: 20,
      ...options,
      logger: (options.logger ?? silentLogger).child({ component: 'grants-writer' }),
    };
  }

  /** Declares the queues and starts consuming; resolves once the consumer is ready. */
  start(): Promise<void> {
    const { connection, batchSize } = this.#o;
    this.#dlq = connection.createPublisher({
      confirm: true,
      queues: [{ queue: GRANTS_DLQ, durable: true }],
    });
    return new Promise((resolve) => {
      this.#consumer = connection.createConsumer(
        {
          queue: GRANTS_QUEUE,
          queueOptions: { durable: true },
          qos: { prefetchCount: batchSize * 2 },
          concurrency: batchSize,
          requeue: true,
        },
        (msg) => this.#handle(msg),
      );
      this.#consumer.once('ready', () => resolve());
      this.#consumer.on('error', (err: unknown) =>
        this.#o.logger.warn({ err: describeError(err) }, 'grants consumer error'),
      );
    });
  }

  async #handle(msg: AsyncMessage): Promise<void> {
    const raw: unknown = msg.body;
    let parsed: unknown = raw;
    if (Buffer.isBuffer(raw) || typeof raw === 'string') {
      try {
        parsed = JSON.parse(raw.toString());
      } catch {
        parsed = undefined;
      }
    }
    const result = grantSchema.safeParse(parsed);
    if (!result.success) {
      const reason = result.error.issues[0]?.message ?? 'not a grant';
      await this.#dlq!.send(
        { routingKey: GRANTS_DLQ, durable: true, headers: { 'x-dlq-reason': `GRANT_BAD_SHAPE: ${reason}` } },
        Buffer.isBuffer(raw) ? raw : Buffer.from(JSON.stringify(raw ?? null)),
      );
      this.stats.dead_lettered++;
      this.#o.logger.warn({ reason }, 'malformed grant dead-lettered');
      return;
    }
    // Resolves when the batch holding this grant has committed: only then is it acked.
    await new Promise<void>((resolve, reject) => {
      this.#batch.push({ grant: result.data, resolve, reject });
      if (this.#batch.length >= this.#o.batchSize) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.#o.lingerMs);
    });
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#batch;
    this.#batch = [];
    if (batch.length === 0) return;
    this.#write(batch).then(
      () => batch.forEach((p) => p.resolve()),
      (err: unknown) => {
        this.stats.failures++;
        this.#o.logger.warn({ err: describeError(err), size: batch.length }, 'grant batch failed; requeued');
        // Redelivered after a pause, so a database outage is not a hot loop.
        setTimeout(() => batch.forEach((p) => p.reject(err)), 1000).unref();
      },
    );
  }

  async #write(batch: Pending[]): Promise<void> {
    const grants = batch.map((p) => p.grant);
    const { rowCount } = await this.#o.pool.query(
      `INSERT INTO character_grants (id, user_id, character_id, acquired_at)
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::timestamptz[])
       ON CONFLICT (id) DO NOTHING`,
      [
        grants.map((g) => grantId(g.user_id, g.character_id)),
        grants.map((g) => g.user_id),
        grants.map((g) => g.character_id),
        grants.map((g) => g.granted_at),
      ],
    );
    this.stats.batches++;
    this.stats.written += rowCount ?? 0;
    this.stats.duplicates += grants.length - (rowCount ?? 0);
    if (this.#o.onCommitted) {
      try {
        await this.#o.onCommitted([...new Set(grants.map((g) => g.user_id))]);
      } catch (err) {
        this.#o.logger.warn({ err: describeError(err) }, 'after-commit hook failed');
      }
    }
  }

  /** Stops consuming and writes what is batched. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closing = this.#consumer?.close();
      this.#flush();
      await closing;
      await this.#dlq?.close();
    })();
    return this.#closing;
  }
}
