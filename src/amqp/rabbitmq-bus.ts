import type { QueueType } from './queue-type.ts';
import { QUEUE_TYPES, queueTypeArguments } from './queue-type.ts';
import type { AsyncMessage, Consumer, Publisher } from 'rabbitmq-client';
import type {
  Bus,
  BusHandler,
  BusMessage,
  BusState,
  PublishOptions,
  SubscribeOptions,
  Subscription,
} from '../bus/bus.ts';
import { JSON_CONTENT_TYPE } from '../bus/bus.ts';
import { newInstanceId } from '../bus/instance-id.ts';
import { StateEmitter } from '../bus/state-emitter.ts';
import { CachecastError, describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { countOption, msOption, oneOfOption, stringOption } from '../options.ts';
import { redactUrl } from '../util/redact.ts';
import { bodyBytes } from './body.ts';
import { withConfirmTimeout } from './confirm-timeout.ts';
import type { Connection, ResolvedAmqpConnectionOptions } from './connection.ts';
import { normalizeAmqpConnectionOptions, openAmqpConnection } from './connection.ts';

export interface RabbitMQBusOptions {
  /** One URL or several (comma-separated or an array): the nodes of a cluster. */
  url: string | readonly string[];
  /** Names this instance's queues (`<topic>.<instanceId>`). @default a new random id */
  instanceId?: string;
  /**
   * How long publish() waits for a connection and the broker's confirm.
   * @default 5000
   */
  publishTimeoutMs?: number;
  /**
   * AMQP heartbeat in seconds; two missed heartbeats mark the connection dead.
   * @default 10
   */
  heartbeatSec?: number;
  /** Reconnect backoff (full jitter) step. @default 200 */
  retryLowMs?: number;
  /** Reconnect backoff ceiling. @default 5000 */
  retryHighMs?: number;
  /**
   * Each instance's queue is durable and outlives a disconnect (so nothing is
   * lost while the connection is re-established); the broker deletes it after
   * this long without a consumer, i.e. once the instance is gone for good.
   * @default 600000
   */
  queueExpiresMs?: number;
  /** Unacknowledged messages in flight per subscription. @default 256 */
  prefetch?: number;
  /**
   * How events are written into the durable per-instance queues. 'persistent'
   * (delivery mode 2): the broker confirms once the message is on disk, and it
   * survives a broker restart. 'transient': confirmed once enqueued, kept in
   * memory only, so a broker restart drops what was not yet delivered; the
   * replicas resync on the reconnect that the restart forces, so they do not
   * miss it. Per-publish `transient` (heartbeats) applies either way.
   * @default 'persistent'
   */
  eventDelivery?: EventDelivery;
  /**
   * EVENT_QUEUE_TYPE: how each instance's queue is declared. 'classic' lives
   * on the node the instance happened to connect to, and while that node is
   * down it cannot be consumed or re-declared: the replica stays degraded
   * until the node returns. 'quorum' is replicated on the cluster's nodes and
   * survives the loss of any minority of them, for a cost in propagation (see
   * README "On a RabbitMQ cluster"). On one node, keep 'classic'.
   * @default 'classic'
   */
  eventQueueType?: QueueType;
  logger?: Logger;
}

export type EventDelivery = 'persistent' | 'transient';

export interface ResolvedRabbitMQBusOptions {
  instanceId: string;
  /** The connection's options (heartbeat, backoff, timeouts), checked. */
  connection: ResolvedAmqpConnectionOptions;
  publishTimeoutMs: number;
  queueExpiresMs: number;
  prefetch: number;
  eventDelivery: EventDelivery;
  eventQueueType: QueueType;
  logger: Logger;
}

/** Merges the defaults and checks every option once (OptionTypeError / OptionRangeError). */
export function normalizeRabbitMQBusOptions(options: RabbitMQBusOptions): ResolvedRabbitMQBusOptions {
  const instanceId =
    options.instanceId === undefined ? newInstanceId() : stringOption('instanceId', options.instanceId);
  const publishTimeoutMs = msOption('publishTimeoutMs', options.publishTimeoutMs, 5000, 1);
  return {
    instanceId,
    connection: normalizeAmqpConnectionOptions({
      url: options.url,
      name: `cachecast ${instanceId}`,
      heartbeatSec: options.heartbeatSec,
      retryLowMs: options.retryLowMs,
      retryHighMs: options.retryHighMs,
      // Longer than the publish timeout, so a publish fails with ours (BUS_PUBLISH_TIMEOUT).
      acquireTimeoutMs: publishTimeoutMs + 1000,
    }),
    publishTimeoutMs,
    queueExpiresMs: msOption('queueExpiresMs', options.queueExpiresMs, 600_000, 1),
    prefetch: countOption('prefetch', options.prefetch, 256, 1, 65_535),
    eventDelivery: oneOfOption(
      'eventDelivery',
      options.eventDelivery,
      ['persistent', 'transient'] as const,
      'persistent',
    ),
    eventQueueType: oneOfOption('eventQueueType', options.eventQueueType, QUEUE_TYPES, 'classic'),
    logger: options.logger ?? silentLogger,
  };
}

/**
 * The production bus: a fanout exchange per topic, one durable queue per
 * instance and topic (`<topic>.<instanceId>`, with `x-expires`), publisher
 * confirms, heartbeats, and reconnection (round-robin over the listed nodes,
 * exponential backoff with jitter) that re-declares the topology and
 * re-consumes. See the README's "Why durable per-instance queues".
 */
export class RabbitMQBus implements Bus {
  readonly instanceId: string;
  readonly #connection: Connection;
  readonly #publisher: Publisher;
  readonly #options: ResolvedRabbitMQBusOptions;
  readonly #log: Logger;
  readonly #state = new StateEmitter();
  readonly #subscriptions = new Set<RabbitSubscription>();
  readonly #declaredExchanges = new Map<string, Promise<void>>();
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #poll: NodeJS.Timeout;
  #closing: Promise<void> | undefined;

  constructor(options: RabbitMQBusOptions) {
    this.#options = normalizeRabbitMQBusOptions(options);
    this.instanceId = this.#options.instanceId;
    const endpoints = this.#options.connection.endpoints;
    this.#log = this.#options.logger.child({ component: 'bus', instance: this.instanceId });
    this.#connection = openAmqpConnection(this.#options.connection);
    this.#connection.on('connection', () => {
      // Exchanges may be gone after a broker reset: declare them again lazily.
      this.#declaredExchanges.clear();
      this.#log.info({ hosts: endpoints.hosts }, 'bus connected');
      this.#state.set('up');
    });
    this.#connection.on('error', (err: unknown) => {
      this.#log.warn({ err: describeError(err), url: redactUrl(endpoints.url) }, 'bus connection error');
      this.#checkReady();
    });
    this.#publisher = this.#connection.createPublisher({ confirm: true, maxAttempts: 1 });
    // The client has no "disconnected" event; errors cover most losses, the poll the rest.
    this.#poll = setInterval(() => this.#checkReady(), 250);
    this.#poll.unref();
  }

  #checkReady(): void {
    if (this.#closing) return;
    if (!this.#connection.ready && this.#state.state !== 'down') this.#state.set('down');
  }

  get state(): BusState {
    return this.#state.state;
  }

  onStateChange(listener: (state: BusState) => void): () => void {
    return this.#state.on(listener);
  }

  async publish(topic: string, body: Buffer | string, options: PublishOptions = {}): Promise<void> {
    if (this.#closing) throw new CachecastError('BUS_CLOSED', 'bus is closed');
    const work = this.#publishConfirmed(topic, Buffer.from(body), options);
    this.#inFlight.add(work);
    try {
      await withConfirmTimeout(work, this.#options.publishTimeoutMs, () => {
        return new CachecastError(
          'BUS_PUBLISH_TIMEOUT',
          `no confirm from the broker within ${this.#options.publishTimeoutMs} ms`,
        );
      });
    } finally {
      this.#inFlight.delete(work);
    }
  }

  async #publishConfirmed(topic: string, body: Buffer, options: PublishOptions): Promise<void> {
    try {
      await this.#declareExchange(topic);
      await this.#publisher.send(
        {
          exchange: topic,
          routingKey: '',
          durable: !options.transient && this.#options.eventDelivery === 'persistent',
          ...(options.transient ? { expiration: String(options.transient.expiresMs) } : {}),
          contentType: JSON_CONTENT_TYPE,
          // With an encoding set the client hands consumers the exact bytes,
          // which signature checks need; kombu sends the same.
          contentEncoding: 'utf-8',
          headers: options.headers,
        },
        body,
      );
    } catch (err) {
      throw new CachecastError('BUS_PUBLISH_FAILED', `publish to ${topic} failed: ${describeError(err)}`, {
        cause: err,
      });
    }
  }

  /** One declaration per topic and connection, shared by concurrent publishes (keeps their order). */
  #declareExchange(topic: string): Promise<void> {
    let declared = this.#declaredExchanges.get(topic);
    if (!declared) {
      declared = this.#connection.exchangeDeclare({ exchange: topic, type: 'fanout', durable: true });
      declared.catch(() => this.#declaredExchanges.delete(topic));
      this.#declaredExchanges.set(topic, declared);
    }
    return declared;
  }

  async subscribe(topic: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.#closing) throw new CachecastError('BUS_CLOSED', 'bus is closed');
    const queue = `${topic}.${this.instanceId}`;
    const subscription = new RabbitSubscription(topic, queue, this.#connection, () =>
      this.#subscriptions.delete(subscription),
    );
    let first = true;
    const ready = new Promise<void>((resolve, reject) => {
      const consumer = this.#connection.createConsumer(
        {
          queue,
          queueOptions: {
            durable: true,
            arguments: {
              'x-expires': this.#options.queueExpiresMs,
              ...queueTypeArguments(this.#options.eventQueueType).arguments,
            },
          },
          qos: { prefetchCount: this.#options.prefetch },
          exchanges: [{ exchange: topic, type: 'fanout', durable: true }],
          queueBindings: [{ exchange: topic, queue, routingKey: '' }],
          concurrency: 1,
          requeue: false,
        },
        async (msg: AsyncMessage) => {
          try {
            await handler(toBusMessage(topic, msg));
          } catch (err) {
            options.onError?.(err);
          }
        },
      );
      consumer.on('ready', () => {
        if (first) {
          first = false;
          resolve();
        }
        options.onReady?.();
      });
      consumer.on('error', (err: unknown) => {
        this.#log.warn({ topic, err: describeError(err) }, 'consumer error');
        options.onError?.(err);
      });
      subscription.attach(consumer, reject);
    });
    this.#subscriptions.add(subscription);
    await ready;
    return subscription;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#poll);
      await Promise.allSettled([...this.#subscriptions].map((s) => s.close()));
      await Promise.allSettled([...this.#inFlight]);
      await this.#publisher.close().catch(() => undefined);
      await this.#connection.close().catch(() => undefined);
      this.#state.set('closed');
    })();
    return this.#closing;
  }
}

class RabbitSubscription implements Subscription {
  #consumer: Consumer | undefined;
  #rejectPending: ((err: unknown) => void) | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    readonly topic: string,
    private readonly queue: string,
    private readonly connection: Connection,
    private readonly onClosed: () => void,
  ) {}

  attach(consumer: Consumer, rejectPending: (err: unknown) => void): void {
    this.#consumer = consumer;
    this.#rejectPending = rejectPending;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#rejectPending?.(new CachecastError('BUS_CLOSED', 'subscription closed before it was ready'));
      // Consumer.close() waits for the handler in flight.
      await this.#consumer?.close().catch(() => undefined);
      if (this.connection.ready) {
        await this.connection.queueDelete({ queue: this.queue }).catch(() => undefined);
      }
      this.onClosed();
    })();
    return this.#closing;
  }
}

function toBusMessage(topic: string, msg: AsyncMessage): BusMessage {
  // Bytes, whatever the client made of the body: every consumer validates the same thing.
  return { topic, body: bodyBytes(msg.body), headers: msg.headers ?? {}, contentType: msg.contentType };
}
