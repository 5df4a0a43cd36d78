// A Node producer for the match worker, doing what Celery's Python client does
// for `app.send_task("character.match_reward", args, kwargs, queue="character.match")`
// followed by `AsyncResult.get()`: declare the queue as Celery declares it (a
// durable direct exchange and queue of that name, bound by that name), publish
// a task protocol v2 message (encodeCeleryTask: Celery 5's headers and body),
// then wait on Redis for `celery-task-meta-<id>` the way Celery's Redis result
// consumer does: SUBSCRIBE to the key's channel, then GET in case it is there.
import { createClient } from 'redis';
import type { Connection } from '../amqp/connection.ts';
import { openAmqpConnection } from '../amqp/connection.ts';
import { WorkQueuePublisher } from '../amqp/work-queue.ts';
import type { Classification } from '../celery/protocol.ts';
import { encodeCeleryTask } from '../celery/protocol.ts';
import type { QueueType } from '../amqp/queue-type.ts';
import { MATCH_QUEUE, celeryQueueDeclaration } from '../celery/queue.ts';
import type { CeleryResultMeta } from '../celery/result-backend.ts';
import { taskMetaKey } from '../celery/result-backend.ts';
import { CachecastError, describeError } from '../errors.ts';
import { deferred } from '../util/deferred.ts';

export interface CeleryClientOptions {
  rabbitmqUrl: string;
  redisUrl: string;
  /** How `character.match` is declared (MATCH_QUEUE_TYPE). @default 'classic' */
  queueType?: QueueType;
  /** How long a publish waits for the broker's confirm. @default 5000 */
  publishTimeoutMs?: number;
  /**
   * How long one Redis connection attempt may take, handshake included (no
   * retries: the next call makes a new attempt). @default 2000
   */
  redisConnectTimeoutMs?: number;
}

export interface CeleryCallResult {
  taskId: string;
  /** The stored result meta (status SUCCESS / FAILURE / REVOKED, result, ...). */
  meta: CeleryResultMeta;
  /** Publish confirmed by the broker, ms after the call began. */
  publishedMs: number;
  /** Result read, ms after the call began. */
  totalMs: number;
}

type Redis = ReturnType<typeof createClient>;

export class CeleryClient {
  readonly #connection: Connection;
  readonly #publisher: WorkQueuePublisher;
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  /** Each client's connection attempt in progress. */
  readonly #connecting = new Map<Redis, Promise<unknown>>();
  readonly #connectTimeoutMs: number;
  #closing: Promise<void> | undefined;

  constructor(options: CeleryClientOptions) {
    const publishTimeoutMs = options.publishTimeoutMs ?? 5000;
    this.#connection = openAmqpConnection({
      url: options.rabbitmqUrl,
      name: 'cachecast stack celery client',
      acquireTimeoutMs: publishTimeoutMs,
    });
    this.#publisher = new WorkQueuePublisher(this.#connection, {
      // What kombu declares before it publishes a task to a queue named in send_task.
      declare: celeryQueueDeclaration(MATCH_QUEUE, options.queueType),
      publishTimeoutMs,
    });
    // No reconnect loop of node-redis's own (its default retries forever, and connect() waits for
    // it): a failed attempt fails, and the next call makes a new one.
    this.#connectTimeoutMs = options.redisConnectTimeoutMs ?? 2000;
    this.#redis = createClient({
      url: options.redisUrl,
      disableOfflineQueue: true,
      socket: { connectTimeout: this.#connectTimeoutMs, reconnectStrategy: false },
    });
    this.#redis.on('error', () => undefined);
    this.#subscriber = this.#redis.duplicate();
    this.#subscriber.on('error', () => undefined);
  }

  /** Connects whichever client is not connected (one may be while the other failed). */
  #connect(): Promise<void> {
    return Promise.all([this.#redis, this.#subscriber].map((c) => this.#connectOne(c))).then(() => undefined);
  }

  #connectOne(client: Redis): Promise<unknown> {
    if (client.isReady) return Promise.resolve();
    let attempt = this.#connecting.get(client);
    if (!attempt) {
      // Open but not ready with no attempt of ours running cannot last without a reconnect
      // strategy; should it happen, start over rather than fail with "Socket already opened".
      if (client.isOpen) client.destroy();
      // connectTimeout bounds the TCP connect only: a server that accepts and never answers the
      // handshake would hold the attempt (and every later call joining it) forever.
      attempt = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`Redis not ready within ${this.#connectTimeoutMs} ms`));
          if (client.isOpen) client.destroy();
        }, this.#connectTimeoutMs);
        client.connect().then(
          () => {
            clearTimeout(timer);
            resolve();
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err instanceof Error ? err : new Error(String(err)));
          },
        );
      }).finally(() => this.#connecting.delete(client));
      this.#connecting.set(client, attempt);
    }
    return attempt;
  }

  /**
   * Sends one `character.match_reward` task and waits for its result.
   * Rejects when the broker or Redis is unreachable, or once `timeoutMs`
   * (everything included: connecting, subscribing, publishing, waiting) has
   * passed.
   */
  async match(
    classification: Classification,
    options: { userId?: string; timeoutMs?: number } = {},
  ): Promise<CeleryCallResult> {
    if (this.#closing) throw new CachecastError('BUS_CLOSED', 'celery client is closed');
    const started = performance.now();
    const timeoutMs = options.timeoutMs ?? 10_000;
    const task = encodeCeleryTask({
      classification,
      ...(options.userId ? { userId: options.userId } : {}),
    });
    const key = taskMetaKey(task.id);
    let stage = 'connecting to Redis';
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no result for task ${task.id} within ${timeoutMs} ms (${stage})`)),
        timeoutMs,
      );
    });
    // Every step races the one deadline; a step still running past it is left to fail on its own.
    const within = <T>(step: Promise<T>): Promise<T> => Promise.race([step, timeout]);
    const result = deferred<CeleryResultMeta>();
    const accept = (raw: string | null): void => {
      if (raw === null) return;
      try {
        const meta = JSON.parse(raw) as CeleryResultMeta;
        // Celery's consumer waits for a ready state; PENDING/STARTED are not.
        if (meta.status === 'SUCCESS' || meta.status === 'FAILURE' || meta.status === 'REVOKED') {
          result.resolve(meta);
        }
      } catch {
        // not a result: keep waiting
      }
    };
    try {
      await within(this.#connect());
      stage = 'subscribing';
      await within(this.#subscriber.subscribe(key, (message) => accept(message)));
      stage = 'publishing';
      await within(
        this.#publisher.send({ exchange: MATCH_QUEUE, routingKey: MATCH_QUEUE }, task.body, task.properties),
      );
      const publishedMs = performance.now() - started;
      stage = 'waiting for the result';
      accept(await within(this.#redis.get(key)));
      const meta = await within(result.promise);
      return { taskId: task.id, meta, publishedMs, totalMs: performance.now() - started };
    } catch (err) {
      throw new Error(`match task failed: ${describeError(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
      // Not awaited: on a broken connection it would wait for the next one. The listener goes at once.
      try {
        this.#subscriber.unsubscribe(key).catch(() => undefined);
      } catch {
        // closed client: nothing subscribed on it any more
      }
    }
  }

  /** Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#publisher.close().catch(() => undefined);
      await this.#connection.close().catch(() => undefined);
      for (const client of [this.#subscriber, this.#redis]) {
        if (client.isReady) await client.close().catch(() => undefined);
        else if (client.isOpen) client.destroy();
      }
    })();
    return this.#closing;
  }
}
