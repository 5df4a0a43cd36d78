// A Bus over a RabbitMQ stream, for the propagation bench's cost curve only:
// one stream per topic (`<topic>.stream`), appended once per event; every
// subscriber reads it with its own AMQP 0-9-1 consumer from offset 'next'
// (basic.qos is required on a stream, and acks move the window on). A
// subscriber that reconnects starts again at 'next', so it resyncs from the
// source like a RabbitMQBus subscriber whose queue was lost. Not a product
// adapter: no per-instance offset is stored, nothing is retried.
import { randomBytes } from 'node:crypto';
import { Connection } from 'rabbitmq-client';
import type { AsyncMessage, Consumer, Publisher } from 'rabbitmq-client';
import type {
  Bus,
  BusHandler,
  BusState,
  PublishOptions,
  SubscribeOptions,
  Subscription,
} from '../src/bus/bus.ts';
import { JSON_CONTENT_TYPE } from '../src/bus/bus.ts';
import { bodyBytes } from '../src/amqp/body.ts';

/** Small: the bench appends a few thousand events; the broker drops old segments past this. */
const STREAM_ARGS = {
  'x-queue-type': 'stream' as const,
  'x-max-length-bytes': 64 * 1024 * 1024,
  'x-stream-max-segment-size-bytes': 8 * 1024 * 1024,
};

export function streamName(topic: string): string {
  return `${topic}.stream`;
}

export class StreamBus implements Bus {
  readonly instanceId = `stream-${randomBytes(6).toString('hex')}`;
  readonly #connection: Connection;
  readonly #publisher: Publisher;
  readonly #consumers: Consumer[] = [];
  readonly #declared = new Map<string, Promise<void>>();
  readonly #listeners = new Set<(state: BusState) => void>();
  #state: BusState = 'connecting';

  constructor(url: string) {
    this.#connection = new Connection({ url, noDelay: true });
    this.#connection.on('error', () => this.#set(this.#connection.ready ? 'up' : 'down'));
    this.#connection.on('connection', () => {
      this.#declared.clear();
      this.#set('up');
    });
    this.#publisher = this.#connection.createPublisher({ confirm: true, maxAttempts: 1 });
  }

  #set(state: BusState): void {
    if (this.#state === state || this.#state === 'closed') return;
    this.#state = state;
    for (const l of this.#listeners) l(state);
  }

  get state(): BusState {
    return this.#state;
  }

  onStateChange(listener: (state: BusState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #declare(stream: string): Promise<void> {
    let declared = this.#declared.get(stream);
    if (!declared) {
      declared = this.#connection
        .queueDeclare({ queue: stream, durable: true, arguments: STREAM_ARGS })
        .then(() => undefined);
      declared.catch(() => this.#declared.delete(stream));
      this.#declared.set(stream, declared);
    }
    return declared;
  }

  /** Declares the topic's stream ahead of the subscribers (it starts asynchronously). */
  async prepare(topic: string): Promise<void> {
    await this.#declare(streamName(topic));
  }

  /** Deletes the topic's stream (the bench's clean-up). */
  async drop(topic: string): Promise<void> {
    await this.#connection.queueDelete({ queue: streamName(topic) }).catch(() => undefined);
  }

  async publish(topic: string, body: Buffer | string, options: PublishOptions = {}): Promise<void> {
    const stream = streamName(topic);
    await this.#declare(stream);
    await this.#publisher.send(
      {
        exchange: '',
        routingKey: stream,
        durable: true,
        contentType: JSON_CONTENT_TYPE,
        contentEncoding: 'utf-8',
        headers: options.headers,
      },
      Buffer.from(body),
    );
  }

  async subscribe(topic: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const stream = streamName(topic);
    let first = true;
    let consumer: Consumer | undefined;
    await new Promise<void>((resolve) => {
      consumer = this.#connection.createConsumer(
        {
          queue: stream,
          queueOptions: { durable: true, arguments: STREAM_ARGS },
          qos: { prefetchCount: 256 },
          arguments: { 'x-stream-offset': 'next' },
          concurrency: 1,
          requeue: false,
        },
        async (msg: AsyncMessage) => {
          try {
            await handler({
              topic,
              body: bodyBytes(msg.body),
              headers: msg.headers ?? {},
              contentType: msg.contentType,
            });
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
      // The client sets the consumer up again after an error (a stream just
      // declared may not have started yet: stream_not_found), so only report it.
      consumer.on('error', (err: unknown) => options.onError?.(err));
    });
    this.#consumers.push(consumer!);
    return {
      topic,
      close: async () => {
        await consumer!.close().catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    await Promise.all(this.#consumers.map((c) => c.close().catch(() => undefined)));
    await this.#publisher.close().catch(() => undefined);
    await this.#connection.close().catch(() => undefined);
    this.#state = 'closed';
    for (const l of this.#listeners) l('closed');
  }
}
