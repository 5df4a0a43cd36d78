/**
 * Work queues (competing consumers, the default exchange or a direct one)
 * beside the fanout bus: persistent publishes resolved by the broker's
 * confirm, for the match worker's grants and dead letters, the grants
 * writer's dead letters, and the stack's Celery client.
 */
import type { Envelope, Publisher, PublisherProps } from 'rabbitmq-client';
import { msOption } from '../options.ts';
import { withConfirmTimeout } from './confirm-timeout.ts';
import type { Connection } from './connection.ts';

export interface WorkQueuePublisherOptions {
  /** Declared before the first publish and again after every reconnect. */
  declare?: Pick<PublisherProps, 'exchanges' | 'queues' | 'queueBindings'>;
  /**
   * How long a publish waits for the broker's confirm; 0 waits as long as
   * the connection does (acquireTimeoutMs, then the confirm itself).
   * @default 5000
   */
  publishTimeoutMs?: number;
}

/** Message properties; undefined ones are left out of the envelope. */
export type WorkMessageProperties = {
  [K in keyof Omit<Envelope, 'exchange' | 'routingKey'>]?: Envelope[K] | undefined;
};

/** Where a message goes: a queue through the default exchange, or an exchange and routing key. */
export interface WorkQueueTarget {
  /** @default '' (the default exchange: routingKey is the queue) */
  exchange?: string;
  routingKey: string;
}

export class WorkQueuePublisher {
  readonly #publisher: Publisher;
  readonly #timeoutMs: number;
  #closing: Promise<void> | undefined;

  constructor(connection: Connection, options: WorkQueuePublisherOptions = {}) {
    this.#timeoutMs = msOption('publishTimeoutMs', options.publishTimeoutMs, 5000);
    // One confirm-mode publisher (a channel of its own) per user, so that a
    // problem with one queue (e.g. a conflicting declaration) stops no other.
    this.#publisher = connection.createPublisher({ confirm: true, maxAttempts: 1, ...options.declare });
  }

  /** A persistent message (unless `properties.durable` is false), resolved by the broker's confirm. */
  send(target: WorkQueueTarget, body: Buffer, properties: WorkMessageProperties = {}): Promise<void> {
    const envelope: Record<string, unknown> = { durable: true };
    for (const [k, v] of Object.entries(properties)) if (v !== undefined) envelope[k] = v;
    envelope.exchange = target.exchange ?? '';
    envelope.routingKey = target.routingKey;
    const sent = this.#publisher.send(envelope as Envelope, body);
    if (this.#timeoutMs === 0) return sent;
    return withConfirmTimeout(
      sent,
      this.#timeoutMs,
      () => new Error(`no confirm for a publish to ${target.routingKey} within ${this.#timeoutMs} ms`),
    );
  }

  /** Waits for the publishes in flight (the client's close drains them). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#publisher.close();
    return this.#closing;
  }
}
