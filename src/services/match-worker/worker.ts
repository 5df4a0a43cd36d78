import type { Counter, Histogram } from 'prom-client';
import type { Connection } from '../../amqp/connection.ts';
import { isAmqpConnection, openAmqpConnection } from '../../amqp/connection.ts';
import type { AsyncMessage, Consumer } from '../../amqp/raw-consumer.ts';
import { ConsumerStatus, createRawBodyConsumer } from '../../amqp/raw-consumer.ts';
import type { Classification, MatchTask } from '../../celery/protocol.ts';
import { TaskError, parseCeleryTask } from '../../celery/protocol.ts';
import { MATCH_QUEUE, celeryQueueDeclaration } from '../../celery/queue.ts';
import { CeleryResultBackend, revokedMeta, successMeta } from '../../celery/result-backend.ts';
import type { Character } from '../../datasets/catalog.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { deferred } from '../../util/deferred.ts';
import { Pauses } from '../../util/pauses.ts';
import { DeadLetters } from './dead-letter.ts';
import { GrantPublisher } from './grants.ts';
import type { TaskOutcome } from './metrics.ts';
import { workerMetrics } from './metrics.ts';
import type { MatchWorkerOptions, ResolvedMatchWorkerOptions } from './options.ts';
import { normalizeMatchWorkerOptions } from './options.ts';

export { MATCH_QUEUE } from '../../celery/queue.ts';
export { MATCH_DLQ } from './dead-letter.ts';
export { TASK_OUTCOMES } from './metrics.ts';
export type { TaskOutcome } from './metrics.ts';
export { normalizeMatchWorkerOptions } from './options.ts';
export type { MatchWorkerOptions } from './options.ts';

export interface MatchWorkerStats extends Record<TaskOutcome, number> {
  in_flight: number;
  consuming: boolean;
}

/**
 * The character match worker: a Celery-compatible consumer of
 * `character.match_reward` tasks (competing consumers on `character.match`).
 *
 * Per task: match = replica.findOne('match_label', middle_category) ?? null;
 * the result is stored in Redis as Celery stores it, then (with a user and a
 * match) a grant is published and confirmed, and only then is the task acked.
 * A failed write requeues the task after a pause; redelivery re-stores the
 * same result and republishes the same grant (the grants writer is
 * idempotent). Expired tasks are stored REVOKED, unreadable messages go to
 * `character.match.dlq`: the worker never crashes on input.
 */
export class MatchWorker {
  readonly #o: ResolvedMatchWorkerOptions;
  readonly #backend: CeleryResultBackend;
  readonly #log: Logger;
  readonly #connection: Connection;
  readonly #ownsConnection: boolean;
  readonly #grants: GrantPublisher;
  readonly #deadLetters: DeadLetters;
  readonly #counts: Record<TaskOutcome, number> = {
    success: 0,
    no_match: 0,
    expired: 0,
    dead_lettered: 0,
    failed: 0,
  };
  readonly #tasks: Counter<'outcome'> | undefined;
  readonly #latency: Histogram<'outcome'> | undefined;
  readonly #closed = deferred<void>();
  readonly #pauses: Pauses;
  #consumer: Consumer | undefined;
  #consuming = false;
  #inFlight = 0;
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: MatchWorkerOptions) {
    this.#o = normalizeMatchWorkerOptions(options);
    this.#pauses = new Pauses(this.#o.clock);
    this.#log = this.#o.logger.child({ component: 'match-worker' });
    this.#backend = new CeleryResultBackend({
      client: this.#o.redis,
      expiresSec: this.#o.resultExpiresSec,
    });
    if (isAmqpConnection(this.#o.connection)) {
      this.#connection = this.#o.connection;
      this.#ownsConnection = false;
    } else {
      this.#connection = openAmqpConnection({
        url: this.#o.connection,
        name: 'cachecast match-worker',
        acquireTimeoutMs: this.#o.publishTimeoutMs,
      });
      this.#connection.on('error', (err: unknown) =>
        this.#log.warn({ err: describeError(err) }, 'broker connection error'),
      );
      this.#ownsConnection = true;
    }
    // A publisher per queue, so that a problem with one (e.g. a conflicting declaration) does not stop the other.
    this.#grants = new GrantPublisher(this.#connection, this.#o.publishTimeoutMs, this.#o.queueType);
    this.#deadLetters = new DeadLetters({
      connection: this.#connection,
      queueType: this.#o.queueType,
      backend: this.#backend,
      publishTimeoutMs: this.#o.publishTimeoutMs,
      clock: this.#o.clock,
      logger: this.#log,
    });
    if (this.#o.registry) {
      const { tasks, latency } = workerMetrics(this.#o.registry);
      this.#tasks = tasks;
      this.#latency = latency;
    }
  }

  /** True once the consumer is attached (the replica has synced), until close(). */
  get consuming(): boolean {
    return this.#consuming;
  }

  get stats(): MatchWorkerStats {
    return { ...this.#counts, in_flight: this.#inFlight, consuming: this.#consuming };
  }

  /**
   * Waits for the replica's first snapshot, then consumes; resolves once the
   * consumer is attached (or at close(), if that comes first). Idempotent.
   */
  start(): Promise<void> {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  async #start(): Promise<void> {
    const synced = await Promise.race([
      this.#o.replica.whenSynced().then(
        () => true,
        () => false,
      ),
      this.#closed.promise.then(() => false),
    ]);
    if (!synced || this.#closing) return;
    // Exactly Celery's declaration of a queue given by name: anything else
    // (arguments, auto-delete) makes Celery's own declare fail with 406.
    const { exchanges, queues, queueBindings } = celeryQueueDeclaration(MATCH_QUEUE, this.#o.queueType);
    const { queue: _queue, ...queueOptions } = queues[0]!;
    // Raw bodies: rabbitmq-client would JSON.parse an application/json body
    // without a content encoding before #handle could check its size.
    const consumer = createRawBodyConsumer(
      this.#connection,
      {
        queue: MATCH_QUEUE,
        queueOptions,
        exchanges,
        queueBindings,
        qos: { prefetchCount: this.#o.prefetch },
        concurrency: this.#o.concurrency,
        requeue: true,
      },
      (msg) => this.#handle(msg),
    );
    this.#consumer = consumer;
    consumer.on('error', (err: unknown) =>
      this.#log.warn({ err: describeError(err) }, 'match consumer error'),
    );
    const ready = deferred<void>();
    consumer.on('ready', () => {
      if (!this.#consuming && !this.#closing) this.#log.info({ queue: MATCH_QUEUE }, 'consuming');
      if (!this.#closing) this.#consuming = true;
      ready.resolve();
    });
    await Promise.race([ready.promise, this.#closed.promise]);
  }

  /** Stops consuming, waits for the tasks in flight, closes the publishers. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#consuming = false;
      this.#closed.resolve();
      this.#pauses.stop();
      // Consumer.close() waits for the handlers in flight; prefetched messages are requeued.
      await this.#consumer?.close().catch(() => undefined);
      await Promise.all([this.#grants.close(), this.#deadLetters.close()]).catch(() => undefined);
      if (this.#ownsConnection) await this.#connection.close().catch(() => undefined);
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------- tasks

  async #handle(msg: AsyncMessage): Promise<ConsumerStatus> {
    const startedAt = performance.now();
    this.#inFlight++;
    let outcome: TaskOutcome = 'failed';
    try {
      const parsed = parseCeleryTask(msg, { maxBytes: this.#o.maxBodyBytes });
      const deliveries = deliveryCount(msg) + 1;
      if (parsed.ok && deliveries >= this.#o.deliveryLimit + 1) {
        // Requeued deliveryLimit times already: a task that keeps failing goes to the DLQ.
        await this.#deadLetters.reject(
          msg,
          new TaskError('TASK_DELIVERY_LIMIT', `delivered ${deliveries} times`, { id: parsed.task.id }),
        );
        outcome = 'dead_lettered';
      } else if (parsed.ok) {
        outcome = await this.#run(parsed.task, msg.redelivered);
      } else {
        await this.#deadLetters.reject(msg, parsed.error);
        outcome = 'dead_lettered';
      }
      return ConsumerStatus.ACK;
    } catch (err) {
      outcome = 'failed';
      this.#log.warn(
        { err: describeError(err), taskId: taskIdOf(msg), retryInMs: this.#o.retryDelayMs },
        'task not completed; requeued after a pause',
      );
      // Requeued, not dropped: the result (or grant) is written on redelivery.
      await this.#pauses.pause(this.#o.retryDelayMs);
      return ConsumerStatus.REQUEUE;
    } finally {
      this.#inFlight--;
      this.#counts[outcome]++;
      this.#tasks?.inc({ outcome });
      this.#latency?.observe({ outcome }, (performance.now() - startedAt) / 1000);
    }
  }

  async #run(task: MatchTask, redelivered: boolean): Promise<TaskOutcome> {
    const now = this.#o.clock.now();
    let match: Character | null | undefined;
    if (redelivered) {
      // As Celery's _store_result: a stored SUCCESS is never overwritten. A
      // task redelivered after a crash keeps its first answer (and may now be
      // past its expiry: it still ran).
      const prior = await this.#backend.get(task.id);
      if (prior?.status === 'SUCCESS') match = storedCharacter(prior.result);
      else if (prior?.status === 'REVOKED') return 'expired';
    }
    if (match === undefined) {
      if (task.expiresAt !== undefined && task.expiresAt <= now) {
        if (!task.ignoreResult) await this.#backend.store(revokedMeta(task.id, now, 'expired'));
        this.#log.debug({ taskId: task.id }, 'expired task revoked');
        return 'expired';
      }
      match = this.#match(task.classification);
      if (!task.ignoreResult) await this.#backend.store(successMeta(task.id, match, now));
    }
    if (match && task.userId !== undefined) await this.#grants.publish(task.id, task.userId, match, now);
    return match ? 'success' : 'no_match';
  }

  #match(classification: Classification): Character | null {
    const label = classification.middle_category;
    if (label === undefined) return null;
    return this.#o.replica.findOne('match_label', label) ?? null;
  }
}

/** The Character in a stored SUCCESS result; undefined when it is neither a Character nor null. */
function storedCharacter(result: unknown): Character | null | undefined {
  if (result === null) return null;
  if (typeof result !== 'object' || Array.isArray(result)) return undefined;
  const c = result as Partial<Character>;
  return typeof c.id === 'string' && typeof c.code === 'string' ? (c as Character) : undefined;
}

function taskIdOf(msg: AsyncMessage): string | undefined {
  const id: unknown = msg.headers?.id;
  return typeof id === 'string' ? id : undefined;
}

/** A quorum queue's x-delivery-count (deliveries before this one); 0 on a classic queue. */
function deliveryCount(msg: AsyncMessage): number {
  const raw: unknown = msg.headers?.['x-delivery-count'];
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? Number(raw) : 0;
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}
