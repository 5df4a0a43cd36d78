import { Connection, ConsumerStatus } from 'rabbitmq-client';
import type { AsyncMessage, Consumer, Publisher } from 'rabbitmq-client';
import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import { parseAmqpUrls } from '../../bus/amqp-url.ts';
import type { GrantMessage } from '../../catalog/grant.ts';
import { GRANTS_QUEUE } from '../../catalog/grant.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { Character } from '../../datasets/catalog.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import type { RedisClient } from '../../redis/client.ts';
import { deferred } from '../../util/deferred.ts';
import { Pauses } from '../../util/pauses.ts';
import { createRawBodyConsumer } from '../raw-consumer.ts';
import type { Classification, MatchTask, TaskError } from './celery-protocol.ts';
import { parseCeleryTask } from './celery-protocol.ts';
import { CeleryResultBackend, failureMeta, revokedMeta, successMeta } from './result-backend.ts';

/** The work queue (CONTRACT.md "Match commands"), declared exactly as Celery declares it. */
export const MATCH_QUEUE = 'character.match';
/** Where messages that cannot be run go, with `x-dlq-reason`. */
export const MATCH_DLQ = `${MATCH_QUEUE}.dlq`;

export type TaskOutcome = 'success' | 'no_match' | 'expired' | 'dead_lettered' | 'failed';
export const TASK_OUTCOMES: readonly TaskOutcome[] = [
  'success',
  'no_match',
  'expired',
  'dead_lettered',
  'failed',
];

export interface MatchWorkerOptions {
  /**
   * The broker: a rabbitmq-client Connection (the caller closes it), or
   * RABBITMQ_URL-style URLs (the worker opens its own connection and closes it).
   */
  connection: Connection | string | readonly string[];
  /** The result backend's Redis (create it with `disableOfflineQueue: true`). */
  redis: RedisClient;
  /** The catalog replica matches are read from; consuming starts once it has synced. */
  replica: ReplicatedCache<Character>;
  logger?: Logger;
  /** Metrics are registered here (`cachecast_match_*`) when given. */
  registry?: Registry;
  /** Tasks run at once. @default 4 */
  concurrency?: number;
  /** Unacknowledged deliveries held (basic.qos); at least `concurrency`. @default 16 */
  prefetch?: number;
  /** Seconds a stored result lives (Celery's result_expires); 0 = forever. @default 86400 */
  resultExpiresSec?: number;
  /** Pause before a task whose result or grant could not be written is requeued. @default 1000 */
  retryDelayMs?: number;
  /** How long a grant or dead-letter publish waits for the broker's confirm. @default 5000 */
  publishTimeoutMs?: number;
  /**
   * Larger task bodies are dead-lettered (TASK_TOO_LARGE), checked on the raw
   * bytes before any parsing. @default 1048576 (1 MiB)
   */
  maxBodyBytes?: number;
  /** @default the system clock (task expiry, retry pauses) */
  clock?: Clock;
}

interface ResolvedOptions {
  concurrency: number;
  prefetch: number;
  resultExpiresSec: number;
  retryDelayMs: number;
  publishTimeoutMs: number;
  maxBodyBytes: number;
  clock: Clock;
}

export interface MatchWorkerStats extends Record<TaskOutcome, number> {
  in_flight: number;
  consuming: boolean;
}

export function normalizeMatchWorkerOptions(options: MatchWorkerOptions): ResolvedOptions {
  const int = (name: string, value: number, min: number): number => {
    if (!Number.isInteger(value) || value < min) throw new RangeError(`${name} must be an integer >= ${min}`);
    return value;
  };
  const concurrency = int('concurrency', options.concurrency ?? 4, 1);
  const prefetch = int('prefetch', options.prefetch ?? 16, 1);
  if (prefetch < concurrency) throw new RangeError('prefetch must be >= concurrency');
  return {
    concurrency,
    prefetch,
    resultExpiresSec: int('resultExpiresSec', options.resultExpiresSec ?? 86_400, 0),
    retryDelayMs: int('retryDelayMs', options.retryDelayMs ?? 1000, 0),
    publishTimeoutMs: int('publishTimeoutMs', options.publishTimeoutMs ?? 5000, 1),
    maxBodyBytes: int('maxBodyBytes', options.maxBodyBytes ?? 1024 * 1024, 1),
    clock: options.clock ?? systemClock,
  };
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
  readonly #o: ResolvedOptions;
  readonly #replica: ReplicatedCache<Character>;
  readonly #backend: CeleryResultBackend;
  readonly #log: Logger;
  readonly #connection: Connection;
  readonly #ownsConnection: boolean;
  readonly #grants: Publisher;
  readonly #dlq: Publisher;
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
    this.#replica = options.replica;
    this.#log = (options.logger ?? silentLogger).child({ component: 'match-worker' });
    this.#backend = new CeleryResultBackend({
      client: options.redis,
      expiresSec: this.#o.resultExpiresSec,
    });
    if (options.connection instanceof Connection) {
      this.#connection = options.connection;
      this.#ownsConnection = false;
    } else {
      const endpoints = parseAmqpUrls(options.connection);
      this.#connection = new Connection({
        url: endpoints.url,
        hosts: endpoints.hosts,
        heartbeat: 10,
        retryLow: 200,
        retryHigh: 5000,
        connectionTimeout: 5000,
        acquireTimeout: this.#o.publishTimeoutMs,
        connectionName: 'cachecast match-worker',
        noDelay: true,
      });
      this.#connection.on('error', (err: unknown) =>
        this.#log.warn({ err: describeError(err) }, 'broker connection error'),
      );
      this.#ownsConnection = true;
    }
    // Confirm-mode publishers, one per queue, so that a problem with one
    // (e.g. a conflicting declaration) does not stop the other.
    this.#grants = this.#connection.createPublisher({
      confirm: true,
      maxAttempts: 1,
      queues: [{ queue: GRANTS_QUEUE, durable: true }],
    });
    this.#dlq = this.#connection.createPublisher({
      confirm: true,
      maxAttempts: 1,
      queues: [{ queue: MATCH_DLQ, durable: true }],
    });
    if (options.registry) {
      const { tasks, latency } = workerMetrics(options.registry);
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
      this.#replica.whenSynced().then(
        () => true,
        () => false,
      ),
      this.#closed.promise.then(() => false),
    ]);
    if (!synced || this.#closing) return;
    // Raw bodies: rabbitmq-client would JSON.parse an application/json body
    // without a content encoding before #handle could check its size.
    const consumer = createRawBodyConsumer(
      this.#connection,
      {
        queue: MATCH_QUEUE,
        // Exactly Celery's declaration of a queue given by name: anything else
        // (arguments, auto-delete) makes Celery's own declare fail with 406.
        queueOptions: { durable: true, exclusive: false, autoDelete: false },
        exchanges: [{ exchange: MATCH_QUEUE, type: 'direct', durable: true, autoDelete: false }],
        queueBindings: [{ exchange: MATCH_QUEUE, queue: MATCH_QUEUE, routingKey: MATCH_QUEUE }],
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

  /** Stops consuming, waits for the tasks in flight, closes the publisher. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#consuming = false;
      this.#closed.resolve();
      this.#pauses.stop();
      // Consumer.close() waits for the handlers in flight; prefetched messages are requeued.
      await this.#consumer?.close().catch(() => undefined);
      await Promise.all([this.#grants.close(), this.#dlq.close()]).catch(() => undefined);
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
      outcome = parsed.ok
        ? await this.#run(parsed.task, msg.redelivered)
        : await this.#reject(msg, parsed.error);
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
    if (match && task.userId !== undefined) {
      const grant: GrantMessage = {
        user_id: task.userId,
        character_id: match.id,
        character_code: match.code,
        task_id: task.id,
        granted_at: new Date(now).toISOString(),
      };
      await this.#publish(this.#grants, GRANTS_QUEUE, Buffer.from(JSON.stringify(grant)), {
        contentType: 'application/json',
        contentEncoding: 'utf-8',
        messageId: task.id,
      });
    }
    return match ? 'success' : 'no_match';
  }

  #match(classification: Classification): Character | null {
    const label = classification.middle_category;
    if (label === undefined) return null;
    return this.#replica.findOne('match_label', label) ?? null;
  }

  /**
   * A message that cannot run: dead-lettered with its body and properties,
   * then acked. A task whose arguments are wrong also gets a FAILURE result
   * (as a Celery worker stores the TypeError of a bad call), so its caller's
   * get() raises instead of waiting for its timeout.
   */
  async #reject(msg: AsyncMessage, error: TaskError): Promise<TaskOutcome> {
    if (error.code === 'TASK_BAD_SHAPE' && error.taskId !== undefined) {
      const now = this.#o.clock.now();
      await this.#backend.store(
        failureMeta(
          error.taskId,
          { exc_type: 'ValueError', exc_message: [error.message], exc_module: 'builtins' },
          `cachecast match-worker refused the task: ${error.code}: ${error.message}`,
          now,
        ),
      );
    }
    const dlqHeaders: Record<string, unknown> = {
      'x-dlq-reason': `${error.code}: ${error.message}`,
      'x-dlq-original-queue': MATCH_QUEUE,
      'x-dlq-original-exchange': msg.exchange,
      'x-dlq-original-routing-key': msg.routingKey,
      'x-dlq-redelivered': msg.redelivered,
    };
    // Not carried over: `expiration` (it would expire in the DLQ) and
    // `userId` (the broker checks it against this connection's user).
    const properties = {
      contentType: msg.contentType,
      contentEncoding: msg.contentEncoding,
      correlationId: msg.correlationId,
      replyTo: msg.replyTo,
      messageId: msg.messageId,
      priority: msg.priority,
      timestamp: msg.timestamp,
      type: msg.type,
      appId: msg.appId,
    };
    const bytes = originalBytes(msg.body);
    try {
      await this.#publish(this.#dlq, MATCH_DLQ, bytes, {
        ...properties,
        headers: { ...(msg.headers ?? {}), ...dlqHeaders },
      });
    } catch (err) {
      // Original headers the broker or the codec refuses (too large, odd
      // types) must not keep the message cycling: retry with ours alone.
      if (!this.#connection.ready) throw err;
      await this.#publish(this.#dlq, MATCH_DLQ, bytes, {
        ...properties,
        headers: { ...dlqHeaders, 'x-dlq-original-headers-dropped': describeError(err).slice(0, 500) },
      });
    }
    this.#log.warn(
      { code: error.code, err: error.message, taskId: error.taskId, task: error.taskName },
      'task dead-lettered',
    );
    return 'dead_lettered';
  }

  /** A persistent publish to a queue, resolved by the broker's confirm (or failed by the timeout). */
  async #publish(
    publisher: Publisher,
    queue: string,
    body: Buffer,
    properties: {
      contentType?: string | undefined;
      contentEncoding?: string | undefined;
      correlationId?: string | undefined;
      replyTo?: string | undefined;
      messageId?: string | undefined;
      priority?: number | undefined;
      timestamp?: number | undefined;
      type?: string | undefined;
      appId?: string | undefined;
      headers?: Record<string, unknown>;
    },
  ): Promise<void> {
    const envelope: Record<string, unknown> = { exchange: '', routingKey: queue, durable: true };
    for (const [k, v] of Object.entries(properties)) if (v !== undefined) envelope[k] = v;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        publisher.send(envelope, body),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new Error(`no confirm for a publish to ${queue} within ${this.#o.publishTimeoutMs} ms`)),
            this.#o.publishTimeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The Character in a stored SUCCESS result; undefined when it is neither a Character nor null. */
function storedCharacter(result: unknown): Character | null | undefined {
  if (result === null) return null;
  if (typeof result !== 'object' || Array.isArray(result)) return undefined;
  const c = result as Partial<Character>;
  return typeof c.id === 'string' && typeof c.code === 'string' ? (c as Character) : undefined;
}

/** The delivery's body as bytes (rabbitmq-client parsed JSON bodies sent without an encoding). */
function originalBytes(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body);
  return Buffer.from(JSON.stringify(body ?? null));
}

function taskIdOf(msg: AsyncMessage): string | undefined {
  const id: unknown = msg.headers?.id;
  return typeof id === 'string' ? id : undefined;
}

/** The worker's metrics, shared by every worker registered on the same registry. */
function workerMetrics(registry: Registry): {
  tasks: Counter<'outcome'>;
  latency: Histogram<'outcome'>;
} {
  const tasksName = 'cachecast_match_tasks_total';
  const latencyName = 'cachecast_match_task_duration_seconds';
  const tasks =
    (registry.getSingleMetric(tasksName) as Counter<'outcome'> | undefined) ??
    new Counter({
      name: tasksName,
      help: 'Match tasks handled, by outcome (failed = requeued after a failed write)',
      labelNames: ['outcome'],
      registers: [registry],
    });
  const latency =
    (registry.getSingleMetric(latencyName) as Histogram<'outcome'> | undefined) ??
    new Histogram({
      name: latencyName,
      help: 'Time from delivery to ack decision per match task, by outcome',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
  for (const outcome of TASK_OUTCOMES) tasks.inc({ outcome }, 0);
  return { tasks, latency };
}
