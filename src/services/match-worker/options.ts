import type { Connection } from '../../amqp/connection.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { Character } from '../../datasets/catalog.ts';
import { OptionRangeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { countOption, msOption, oneOfOption } from '../../options.ts';
import type { QueueType } from '../../amqp/queue-type.ts';
import { QUEUE_TYPES } from '../../amqp/queue-type.ts';
import type { RedisClient } from '../../redis/client.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import type { Registry } from 'prom-client';

export interface MatchWorkerOptions {
  /**
   * The broker: a Connection (the caller closes it), or RABBITMQ_URL-style
   * URLs (the worker opens its own connection and closes it).
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
  /**
   * MATCH_QUEUE_TYPE: how `character.match`, its DLQ and `character.grants`
   * are declared. Every declarer must agree (Celery clients, the catalog).
   * @default 'classic'
   */
  queueType?: QueueType;
  /**
   * A task delivered this many times (a quorum queue's x-delivery-count + 1)
   * is dead-lettered (TASK_DELIVERY_LIMIT) instead of requeued once more, so a
   * task that always fails cannot loop forever. Classic queues carry no count.
   * @default 20
   */
  deliveryLimit?: number;
}

export interface ResolvedMatchWorkerOptions {
  connection: Connection | string | readonly string[];
  redis: RedisClient;
  replica: ReplicatedCache<Character>;
  logger: Logger;
  registry: Registry | undefined;
  concurrency: number;
  prefetch: number;
  resultExpiresSec: number;
  retryDelayMs: number;
  publishTimeoutMs: number;
  maxBodyBytes: number;
  clock: Clock;
  queueType: QueueType;
  deliveryLimit: number;
}

/** Merges the defaults and checks every option once (OptionTypeError / OptionRangeError). */
export function normalizeMatchWorkerOptions(options: MatchWorkerOptions): ResolvedMatchWorkerOptions {
  const concurrency = countOption('concurrency', options.concurrency, 4, 1);
  const prefetch = countOption('prefetch', options.prefetch, 16, 1, 65_535);
  if (prefetch < concurrency) throw new OptionRangeError('prefetch must be >= concurrency');
  return {
    connection: options.connection,
    redis: options.redis,
    replica: options.replica,
    logger: options.logger ?? silentLogger,
    registry: options.registry,
    concurrency,
    prefetch,
    resultExpiresSec: countOption('resultExpiresSec', options.resultExpiresSec, 86_400, 0),
    retryDelayMs: msOption('retryDelayMs', options.retryDelayMs, 1000),
    publishTimeoutMs: msOption('publishTimeoutMs', options.publishTimeoutMs, 5000, 1),
    maxBodyBytes: countOption('maxBodyBytes', options.maxBodyBytes, 1024 * 1024, 1),
    clock: options.clock ?? systemClock,
    queueType: oneOfOption('queueType', options.queueType, QUEUE_TYPES, 'classic'),
    deliveryLimit: countOption('deliveryLimit', options.deliveryLimit, 20, 1, 1_000_000),
  };
}
