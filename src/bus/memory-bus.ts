import { CachecastError } from '../errors.ts';
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

/**
 * An in-process stand-in for a RabbitMQ broker: fanout topics, one queue per
 * subscribing instance, and the same durability as the RabbitMQ adapter's
 * per-instance queues (messages wait in the queue while the instance is
 * disconnected). `disconnect()` / `reconnect()` inject faults.
 */
export class MemoryBroker {
  readonly #queues = new Map<string, Set<MemoryQueue>>();

  /** @internal */
  bind(queue: MemoryQueue): void {
    let set = this.#queues.get(queue.topic);
    if (!set) this.#queues.set(queue.topic, (set = new Set()));
    set.add(queue);
  }

  /** @internal */
  unbind(queue: MemoryQueue): void {
    this.#queues.get(queue.topic)?.delete(queue);
  }

  /** @internal */
  route(message: BusMessage): void {
    for (const queue of this.#queues.get(message.topic) ?? []) queue.enqueue(message);
  }

  /** Simulates a lost connection: the bus goes down, its queues keep collecting. */
  disconnect(bus: MemoryBus): void {
    bus.setConnected(false);
  }

  reconnect(bus: MemoryBus): void {
    bus.setConnected(true);
  }
}

export interface MemoryBusOptions {
  instanceId?: string;
  /** @default 5000 */
  publishTimeoutMs?: number;
}

export class MemoryBus implements Bus {
  readonly instanceId: string;
  readonly #broker: MemoryBroker;
  readonly #state = new StateEmitter();
  readonly #publishTimeoutMs: number;
  readonly #queues = new Set<MemoryQueue>();
  readonly #waiters = new Set<() => void>();
  #closing: Promise<void> | undefined;

  constructor(broker: MemoryBroker, options: MemoryBusOptions = {}) {
    this.#broker = broker;
    this.instanceId = options.instanceId ?? newInstanceId();
    this.#publishTimeoutMs = options.publishTimeoutMs ?? 5000;
    this.#state.set('up');
  }

  get state(): BusState {
    return this.#state.state;
  }

  onStateChange(listener: (state: BusState) => void): () => void {
    return this.#state.on(listener);
  }

  /** @internal used by MemoryBroker's fault injection */
  setConnected(connected: boolean): void {
    if (this.#closing) return;
    this.#state.set(connected ? 'up' : 'down');
    if (!connected) {
      for (const queue of this.#queues) queue.suspend();
      return;
    }
    for (const wake of [...this.#waiters]) wake();
    for (const queue of this.#queues) queue.resume();
  }

  async publish(topic: string, body: Buffer | string, options: PublishOptions = {}): Promise<void> {
    if (this.#closing) throw new CachecastError('BUS_CLOSED', 'bus is closed');
    if (this.state !== 'up') await this.#waitForUp();
    const message: BusMessage = {
      topic,
      body: Buffer.from(body),
      headers: { ...options.headers },
      contentType: JSON_CONTENT_TYPE,
    };
    this.#broker.route(message);
  }

  #waitForUp(): Promise<void> {
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        if (this.#closing) reject(new CachecastError('BUS_CLOSED', 'bus is closed'));
        else resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(wake);
        reject(
          new CachecastError('BUS_PUBLISH_TIMEOUT', `not connected within ${this.#publishTimeoutMs} ms`),
        );
      }, this.#publishTimeoutMs);
      this.#waiters.add(wake);
    });
  }

  subscribe(topic: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.#closing) return Promise.reject(new CachecastError('BUS_CLOSED', 'bus is closed'));
    const queue = new MemoryQueue(topic, handler, options, this);
    this.#queues.add(queue);
    this.#broker.bind(queue);
    options.onReady?.();
    const subscription: Subscription = {
      topic,
      close: async () => {
        this.#broker.unbind(queue);
        this.#queues.delete(queue);
        await queue.drain();
      },
    };
    return Promise.resolve(subscription);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const wake of [...this.#waiters]) wake();
      for (const queue of [...this.#queues]) {
        this.#broker.unbind(queue);
        await queue.drain();
      }
      this.#queues.clear();
      this.#state.set('closed');
    })();
    return this.#closing;
  }
}

/** @internal One instance's queue on one topic: delivers in order, one at a time. */
class MemoryQueue {
  readonly #pending: BusMessage[] = [];
  #running: Promise<void> | undefined;
  #stopped = false;
  #wasDown = false;

  constructor(
    readonly topic: string,
    private readonly handler: BusHandler,
    private readonly options: SubscribeOptions,
    private readonly bus: MemoryBus,
  ) {}

  enqueue(message: BusMessage): void {
    this.#pending.push(message);
    this.#kick();
  }

  suspend(): void {
    this.#wasDown = true;
  }

  resume(): void {
    if (this.#wasDown) {
      this.#wasDown = false;
      this.options.onReady?.();
    }
    this.#kick();
  }

  async drain(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }

  #kick(): void {
    if (this.#running || this.#stopped) return;
    this.#running = this.#deliver().finally(() => {
      this.#running = undefined;
      if (this.#pending.length > 0 && this.bus.state === 'up' && !this.#stopped) this.#kick();
    });
  }

  async #deliver(): Promise<void> {
    // Deliver asynchronously, as a network would: never inside publish().
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#pending.length > 0 && !this.#stopped) {
      if (this.bus.state !== 'up') {
        this.#wasDown = true;
        return;
      }
      const message = this.#pending.shift()!;
      try {
        await this.handler(message);
      } catch (err) {
        this.options.onError?.(err);
      }
    }
    if (this.bus.state !== 'up') this.#wasDown = true;
  }
}
