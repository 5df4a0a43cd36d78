import { Connection } from 'rabbitmq-client';
import type { AsyncMessage, Consumer, Publisher } from 'rabbitmq-client';
import { CachecastError, describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { redactUrl } from '../util/redact.ts';
import { parseAmqpUrls } from './amqp-url.ts';
import type {
  Bus,
  BusHandler,
  BusMessage,
  BusState,
  PublishOptions,
  SubscribeOptions,
  Subscription,
} from './bus.ts';
import { JSON_CONTENT_TYPE } from './bus.ts';
import { newInstanceId } from './instance-id.ts';
import { StateEmitter } from './state-emitter.ts';

export interface RabbitMQBusOptions {
  /** One URL or several (comma-separated or an array): the nodes of a cluster. */
  url: string | readonly string[];
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
  logger?: Logger;
}

interface ResolvedOptions {
  publishTimeoutMs: number;
  queueExpiresMs: number;
  prefetch: number;
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
  readonly #options: ResolvedOptions;
  readonly #log: Logger;
  readonly #state = new StateEmitter();
  readonly #subscriptions = new Set<RabbitSubscription>();
  readonly #declaredExchanges = new Map<string, Promise<void>>();
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #poll: NodeJS.Timeout;
  #closing: Promise<void> | undefined;

  constructor(options: RabbitMQBusOptions) {
    const endpoints = parseAmqpUrls(options.url);
    this.instanceId = options.instanceId ?? newInstanceId();
    this.#log = (options.logger ?? silentLogger).child({ component: 'bus', instance: this.instanceId });
    this.#options = {
      publishTimeoutMs: positive('publishTimeoutMs', options.publishTimeoutMs ?? 5000),
      queueExpiresMs: positive('queueExpiresMs', options.queueExpiresMs ?? 600_000),
      prefetch: positive('prefetch', options.prefetch ?? 256),
    };
    this.#connection = new Connection({
      url: endpoints.url,
      hosts: endpoints.hosts,
      heartbeat: positive('heartbeatSec', options.heartbeatSec ?? 10),
      retryLow: positive('retryLowMs', options.retryLowMs ?? 200),
      retryHigh: positive('retryHighMs', options.retryHighMs ?? 5000),
      connectionTimeout: 5000,
      // Longer than the publish timeout, so a publish fails with ours (BUS_PUBLISH_TIMEOUT).
      acquireTimeout: this.#options.publishTimeoutMs + 1000,
      connectionName: `cachecast ${this.instanceId}`,
      noDelay: true,
    });
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
      await withTimeout(work, this.#options.publishTimeoutMs, () => {
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
          durable: !options.transient,
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
          queueOptions: { durable: true, arguments: { 'x-expires': this.#options.queueExpiresMs } },
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
  const raw: unknown = msg.body;
  // The client parses application/json bodies sent without an encoding; turn
  // them back into bytes so every consumer validates the same thing.
  const body = Buffer.isBuffer(raw)
    ? raw
    : typeof raw === 'string'
      ? Buffer.from(raw)
      : Buffer.from(JSON.stringify(raw ?? null));
  return { topic, body, headers: msg.headers ?? {}, contentType: msg.contentType };
}

function withTimeout<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(error()), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number`);
  return value;
}
