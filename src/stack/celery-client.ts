// A Node producer for the match worker, doing what Celery's Python client does
// for `app.send_task("character.match_reward", args, kwargs, queue="character.match")`
// followed by `AsyncResult.get()`: declare the queue as Celery declares it (a
// durable direct exchange and queue of that name, bound by that name), publish
// a task protocol v2 message (encodeCeleryTask: Celery 5's headers and body),
// then wait on Redis for `celery-task-meta-<id>` the way Celery's Redis result
// consumer does: SUBSCRIBE to the key's channel, then GET in case it is there.
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
import type { RedisNodeClient } from '../redis/client.ts';
import { createNodeClient } from '../redis/client.ts';
import { askSentinelsForMaster } from '../redis/sentinel-master.ts';
import type { RedisTarget } from '../redis/target.ts';
import { DEFAULT_SENTINEL_NAME, toRedisTarget } from '../redis/target.ts';
import { deferred } from '../util/deferred.ts';

export interface CeleryClientOptions {
  rabbitmqUrl: string;
  /** Where results are read: a URL, or the master the Sentinels name (asked at each new connection). */
  redis: string | RedisTarget;
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

/** The two connections a call uses: GET, and SUBSCRIBE (a subscribed connection takes nothing else). */
interface Clients {
  redis: RedisNodeClient;
  subscriber: RedisNodeClient;
}

export class CeleryClient {
  readonly #connection: Connection;
  readonly #publisher: WorkQueuePublisher;
  readonly #redis: RedisTarget;
  readonly #connectTimeoutMs: number;
  #clients: Clients | undefined;
  /** The connection attempt in progress, which every call joins. */
  #connecting: Promise<Clients> | undefined;
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
    this.#redis = toRedisTarget(options.redis);
    this.#connectTimeoutMs = options.redisConnectTimeoutMs ?? 2000;
  }

  /**
   * Both connections, ready. When either is not (never opened, or dropped: no
   * reconnect loop of node-redis's own, whose default retries forever and
   * makes connect() wait for it), both are replaced by new ones, to the
   * master the Sentinels name now: after a failover, the new one.
   */
  #connect(): Promise<Clients> {
    const current = this.#clients;
    if (current?.redis.isReady && current.subscriber.isReady) return Promise.resolve(current);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<Clients> {
    if (this.#clients) destroyClients(this.#clients);
    this.#clients = undefined;
    const { url, sentinels, sentinelName } = this.#redis;
    const master = sentinels?.length
      ? await askSentinelsForMaster(sentinels, sentinelName ?? DEFAULT_SENTINEL_NAME, this.#connectTimeoutMs)
      : undefined;
    const redis = createNodeClient(url, master, { connectTimeoutMs: this.#connectTimeoutMs });
    const clients = { redis, subscriber: redis.duplicate() };
    for (const client of [clients.redis, clients.subscriber]) client.on('error', () => undefined);
    try {
      await Promise.all([this.#connectOne(clients.redis), this.#connectOne(clients.subscriber)]);
    } catch (err) {
      destroyClients(clients);
      throw err;
    }
    if (this.#closing) {
      destroyClients(clients);
      throw new CachecastError('BUS_CLOSED', 'celery client is closed');
    }
    this.#clients = clients;
    return clients;
  }

  /** connectTimeout bounds the TCP connect only: a server that accepts and never answers the handshake would hold the attempt forever. */
  #connectOne(client: RedisNodeClient): Promise<void> {
    return new Promise<void>((resolve, reject) => {
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
    });
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
    let clients: Clients | undefined;
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
      clients = await within(this.#connect());
      stage = 'subscribing';
      await within(clients.subscriber.subscribe(key, (message) => accept(message)));
      stage = 'publishing';
      await within(
        this.#publisher.send({ exchange: MATCH_QUEUE, routingKey: MATCH_QUEUE }, task.body, task.properties),
      );
      const publishedMs = performance.now() - started;
      stage = 'waiting for the result';
      accept(await within(clients.redis.get(key)));
      const meta = await within(result.promise);
      return { taskId: task.id, meta, publishedMs, totalMs: performance.now() - started };
    } catch (err) {
      throw new Error(`match task failed: ${describeError(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
      // Not awaited: on a broken connection it would wait for the next one. The listener goes at once.
      try {
        clients?.subscriber.unsubscribe(key).catch(() => undefined);
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
      await this.#connecting?.catch(() => undefined);
      const clients = this.#clients;
      this.#clients = undefined;
      if (clients) {
        for (const client of [clients.subscriber, clients.redis]) {
          if (client.isReady) await client.close().catch(() => undefined);
          else if (client.isOpen) client.destroy();
        }
      }
    })();
    return this.#closing;
  }
}

function destroyClients(clients: Clients): void {
  for (const client of [clients.redis, clients.subscriber]) if (client.isOpen) client.destroy();
}
