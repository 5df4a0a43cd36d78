import type {
  Bus,
  BusHandler,
  BusMessage,
  BusState,
  PublishOptions,
  SubscribeOptions,
  Subscription,
} from '../src/bus/bus.ts';
import { JSON_CONTENT_TYPE } from '../src/bus/bus.ts';
import { CachecastError } from '../src/errors.ts';
import type { Scheduler } from './scheduler.ts';

/** Decides, per message and queue, when it arrives: [] drops it, two delays duplicate it. */
export type Route = (message: BusMessage, queue: SimQueue) => number[];

/** One instance's queue on a topic: messages arrive at their own times, in any order. */
export class SimQueue {
  /** Messages that arrived while the instance was away (a durable queue keeps them). */
  readonly #parked: BusMessage[] = [];

  constructor(
    readonly topic: string,
    readonly bus: SimBus,
    private readonly handler: BusHandler,
  ) {}

  arrive(message: BusMessage): void {
    if (this.bus.state !== 'up') {
      if (!this.bus.losesQueue) this.#parked.push(message);
      return;
    }
    void this.handler(message);
  }

  /** The instance reconnected: what the queue kept comes now. */
  flush(): void {
    for (const message of this.#parked.splice(0)) void this.handler(message);
  }

  clear(): void {
    this.#parked.length = 0;
  }
}

/** The fanout broker: every subscribed queue of a topic gets every message, as `route` says. */
export class SimBroker {
  readonly #queues = new Set<SimQueue>();

  constructor(
    readonly scheduler: Scheduler,
    public route: Route,
  ) {}

  bind(queue: SimQueue): void {
    this.#queues.add(queue);
  }

  unbind(queue: SimQueue): void {
    this.#queues.delete(queue);
  }

  publish(message: BusMessage): void {
    const now = this.scheduler.now();
    for (const queue of this.#queues) {
      if (queue.topic !== message.topic) continue;
      for (const delay of this.route(message, queue)) {
        this.scheduler.at(now + delay, () => {
          if (this.#queues.has(queue)) queue.arrive(message);
        });
      }
    }
  }
}

/**
 * The Bus contract on virtual time. `setUp(false)` is a cut link: the state
 * goes down, publishes fail, deliveries wait in the queue (or are lost with it,
 * `losesQueue`); `setUp(true)` reconnects and calls onReady again.
 */
export class SimBus implements Bus {
  readonly #listeners = new Set<(state: BusState) => void>();
  readonly #queues = new Map<SimQueue, SubscribeOptions>();
  #state: BusState = 'up';
  losesQueue = false;

  constructor(
    readonly broker: SimBroker,
    readonly instanceId: string,
  ) {}

  get state(): BusState {
    return this.#state;
  }

  setUp(up: boolean): void {
    if (this.#state === 'closed' || (this.#state === 'up') === up) return;
    this.#state = up ? 'up' : 'down';
    for (const listener of [...this.#listeners]) listener(this.#state);
    if (!up) return;
    for (const [queue, options] of this.#queues) {
      if (this.losesQueue) queue.clear();
      options.onReady?.();
      queue.flush();
    }
    this.losesQueue = false;
  }

  publish(topic: string, body: Buffer | string, options: PublishOptions = {}): Promise<void> {
    if (this.#state !== 'up') {
      return Promise.reject(new CachecastError('BUS_PUBLISH_TIMEOUT', 'link cut'));
    }
    this.broker.publish({
      topic,
      body: Buffer.from(body),
      headers: { ...options.headers },
      contentType: JSON_CONTENT_TYPE,
    });
    return Promise.resolve();
  }

  subscribe(topic: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<Subscription> {
    const queue = new SimQueue(topic, this, handler);
    this.#queues.set(queue, options);
    this.broker.bind(queue);
    options.onReady?.();
    return Promise.resolve({
      topic,
      close: () => {
        this.broker.unbind(queue);
        this.#queues.delete(queue);
        return Promise.resolve();
      },
    });
  }

  onStateChange(listener: (state: BusState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): Promise<void> {
    for (const queue of this.#queues.keys()) this.broker.unbind(queue);
    this.#queues.clear();
    this.#state = 'closed';
    return Promise.resolve();
  }
}
