/**
 * The bus: one narrow contract for broadcasting events to every instance.
 *
 * A topic is a fanout exchange. Every subscriber (one per instance) has its own
 * queue bound to it, so every instance receives every message. Adapters:
 * RabbitMQ (production) and in-memory (unit tests, embedded use). Both pass the
 * conformance suite in test/conformance/bus.conformance.ts.
 */
export type BusState = 'connecting' | 'up' | 'down' | 'closed';

export interface BusMessage {
  readonly topic: string;
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly contentType: string | undefined;
}

export interface PublishOptions {
  /** Extra message headers (e.g. an event signature). */
  headers?: Record<string, string>;
  /**
   * A message worth nothing later (a heartbeat): not written to disk, and
   * dropped from a queue after `expiresMs` instead of piling up while its
   * consumer is away. Events are never transient.
   */
  transient?: { expiresMs: number };
}

/**
 * Called once per delivered message, in order. Delivery is at least once: a
 * message whose acknowledgement a lost connection swallowed comes again after
 * the reconnect (replicas drop it by version). The message is acknowledged when
 * the handler returns (or its promise settles). A handler that throws does not
 * stop the subscription; the message is dropped and reported through `onError`.
 */
export type BusHandler = (message: BusMessage) => void | Promise<void>;

export interface SubscribeOptions {
  /**
   * Called every time the subscription is (re)established: the queue is
   * declared and bound and messages will flow. The first call happens before
   * `subscribe()` resolves. A replica resyncs on every call after the first.
   */
  onReady?: () => void;
  /** A handler error or a consumer error; never fatal. */
  onError?: (err: unknown) => void;
}

export interface Subscription {
  readonly topic: string;
  /** Stops delivery and removes this instance's queue. Idempotent. */
  close(): Promise<void>;
}

export interface Bus {
  /** A stable id for this instance; events it publishes carry it as `origin`. */
  readonly instanceId: string;
  readonly state: BusState;
  /**
   * Resolves once the broker has the message (publisher confirm). Waits for a
   * reconnection up to the adapter's publish timeout, then rejects with
   * BUS_PUBLISH_TIMEOUT; after close() rejects with BUS_CLOSED. A publish that
   * timed out may still reach the broker later: publishers retry, and
   * consumers drop the duplicate by version.
   */
  publish(topic: string, body: Buffer | string, options?: PublishOptions): Promise<void>;
  /** Resolves once messages published from now on will be delivered. */
  subscribe(topic: string, handler: BusHandler, options?: SubscribeOptions): Promise<Subscription>;
  /** Returns a function that removes the listener. */
  onStateChange(listener: (state: BusState) => void): () => void;
  /** Closes subscriptions, waits for in-flight handlers and publishes. Idempotent. */
  close(): Promise<void>;
}

/** JSON bodies go out exactly as kombu's consumers expect them. */
export const JSON_CONTENT_TYPE = 'application/json';
