import type { QueueType } from '../../amqp/queue-type.ts';
import { queueTypeArguments } from '../../amqp/queue-type.ts';
import { durableQueue } from '../../celery/queue.ts';
import type pg from 'pg';
import type { Connection } from '../../amqp/connection.ts';
import { z } from 'zod';
import { grantId } from '../../catalog/grant-id.ts';
import type { GrantMessage } from '../../catalog/grant.ts';
import { GRANTS_QUEUE, grantTimeAsUtc, grantUserIdProblem } from '../../catalog/grant.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import type { Consumer, RawMessage } from '../../amqp/raw-consumer.ts';
import { createRawBodyConsumer } from '../../amqp/raw-consumer.ts';
import { WorkQueuePublisher } from '../../amqp/work-queue.ts';

export const GRANTS_DLQ = `${GRANTS_QUEUE}.dlq`;

/** Values PostgreSQL would refuse are refused here: one of them would fail its whole batch. */
const grantSchema = z.object({
  user_id: z
    .string()
    .min(1)
    .max(200)
    .superRefine((id, ctx) => {
      const problem = grantUserIdProblem(id);
      if (problem) ctx.addIssue({ code: 'custom', message: `user_id ${problem}` });
    }),
  character_id: z.uuid(),
  character_code: z.string().max(200),
  task_id: z.string().max(200),
  granted_at: z.iso
    .datetime({ offset: true })
    .refine((t) => grantTimeAsUtc(t) !== undefined, 'granted_at is outside the years 1 to 9999 (UTC)')
    .transform((t) => grantTimeAsUtc(t)!),
});

/**
 * SQLSTATE classes that blame the rows, not the database: data exceptions
 * (22), integrity constraints (23), program limits such as an oversized index
 * row (54). A batch failing so is split to find the row; any other failure
 * (connection lost, database down) requeues the whole batch.
 */
const ROW_ERROR_CLASSES: ReadonlySet<string> = new Set(['22', '23', '54']);

function isRowError(err: unknown): err is Error & { code: string } {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof Error && typeof code === 'string' && ROW_ERROR_CLASSES.has(code.slice(0, 2));
}

export interface GrantsWriterOptions {
  connection: Connection;
  pool: pg.Pool;
  logger?: Logger;
  /** Grants written per transaction. @default 100 */
  batchSize?: number;
  /** How long a partial batch waits for company. @default 20 */
  lingerMs?: number;
  /** Larger messages are dead-lettered (GRANT_TOO_LARGE) unparsed. @default 65536 */
  maxBodyBytes?: number;
  /** Called with the user ids of each committed batch (e.g. to invalidate their cached collections). */
  onCommitted?: (userIds: string[]) => void | Promise<void>;
  /** How `character.grants` and its DLQ are declared (MATCH_QUEUE_TYPE, as the match worker). @default 'classic' */
  queueType?: QueueType;
}

interface Pending {
  grant: GrantMessage;
  /** The message as it came, for the DLQ. */
  body: Buffer;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * Persists the grants the match worker publishes (seed 002 #11-12): in
 * batches, idempotently (a deterministic id per user and character, ON
 * CONFLICT DO NOTHING), acknowledging each message only after its batch
 * committed. A malformed message goes to `character.grants.dlq`
 * (GRANT_BAD_SHAPE); so does a grant the database refuses all the same
 * (GRANT_REFUSED_BY_DATABASE), found by splitting its batch, whose other
 * grants are written.
 */
export class GrantsWriter {
  readonly #o: Required<Omit<GrantsWriterOptions, 'onCommitted' | 'logger'>> &
    Pick<GrantsWriterOptions, 'onCommitted'> & { logger: Logger };
  #consumer: Consumer | undefined;
  #dlq: WorkQueuePublisher | undefined;
  #batch: Pending[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;
  readonly stats = {
    written: 0,
    duplicates: 0,
    dead_lettered: 0,
    /** Of dead_lettered: refused by the database, found by splitting their batch. */
    refused: 0,
    batches: 0,
    /** Batches that failed as a whole and were requeued. */
    failures: 0,
    /** Batches split in two after a row error. */
    splits: 0,
  };

  constructor(options: GrantsWriterOptions) {
    this.#o = {
      batchSize: 100,
      lingerMs: 20,
      maxBodyBytes: 65_536,
      queueType: 'classic',
      ...options,
      logger: (options.logger ?? silentLogger).child({ component: 'grants-writer' }),
    };
  }

  /** Declares the queues and starts consuming; resolves once the consumer is ready. */
  start(): Promise<void> {
    const { connection, batchSize } = this.#o;
    // No timeout of its own: a dead letter waits as long as the connection lets it.
    this.#dlq = new WorkQueuePublisher(connection, {
      declare: { queues: [durableQueue(GRANTS_DLQ, this.#o.queueType)] },
      publishTimeoutMs: 0,
    });
    return new Promise((resolve) => {
      // Raw bodies: the size is checked before anything parses them.
      this.#consumer = createRawBodyConsumer(
        connection,
        {
          queue: GRANTS_QUEUE,
          queueOptions: { durable: true, ...queueTypeArguments(this.#o.queueType) },
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

  async #handle(msg: RawMessage): Promise<void> {
    const body = msg.body;
    if (body.length > this.#o.maxBodyBytes) {
      const reason = `body is ${body.length} bytes, more than ${this.#o.maxBodyBytes}`;
      await this.#deadLetter(body, `GRANT_TOO_LARGE: ${reason}`);
      this.#o.logger.warn({ reason }, 'oversized grant dead-lettered');
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString());
    } catch {
      parsed = undefined;
    }
    const result = grantSchema.safeParse(parsed);
    if (!result.success) {
      const reason = result.error.issues[0]?.message ?? 'not a grant';
      await this.#deadLetter(body, `GRANT_BAD_SHAPE: ${reason}`);
      this.#o.logger.warn({ reason }, 'malformed grant dead-lettered');
      return;
    }
    // Resolves when the batch holding this grant has committed: only then is it acked.
    await new Promise<void>((resolve, reject) => {
      this.#batch.push({ grant: result.data, body, resolve, reject });
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
    this.#writeOrSplit(batch).then(
      () => undefined,
      (err: unknown) => {
        this.stats.failures++;
        this.#o.logger.warn({ err: describeError(err), size: batch.length }, 'grant batch failed; requeued');
        // Redelivered after a pause, so a database outage is not a hot loop (the grants of
        // sub-batches already written are resolved: rejecting them changes nothing).
        setTimeout(() => batch.forEach((p) => p.reject(err)), 1000).unref();
      },
    );
  }

  /**
   * Writes the batch and resolves its grants. A row error splits it in two,
   * each half written the same way, down to the one grant the database
   * refuses, which is dead-lettered (then acked): one bad grant costs about
   * 2·log2(batch) statements and blocks nothing. Other errors reject (requeue).
   */
  async #writeOrSplit(batch: Pending[]): Promise<void> {
    try {
      await this.#write(batch);
    } catch (err) {
      if (!isRowError(err)) throw err;
      if (batch.length === 1) {
        const [refused] = batch as [Pending];
        const reason = `GRANT_REFUSED_BY_DATABASE: ${err.code} ${err.message}`.slice(0, 500);
        await this.#deadLetter(refused.body, reason);
        this.stats.refused++;
        this.#o.logger.warn(
          { reason, task: refused.grant.task_id },
          'grant refused by the database; dead-lettered',
        );
        refused.resolve();
        return;
      }
      this.stats.splits++;
      const half = Math.ceil(batch.length / 2);
      await this.#writeOrSplit(batch.slice(0, half));
      await this.#writeOrSplit(batch.slice(half));
      return;
    }
    batch.forEach((p) => p.resolve());
  }

  async #deadLetter(body: Buffer, reason: string): Promise<void> {
    await this.#dlq!.send({ routingKey: GRANTS_DLQ }, body, { headers: { 'x-dlq-reason': reason } });
    this.stats.dead_lettered++;
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
