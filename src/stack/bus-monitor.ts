import { randomBytes } from 'node:crypto';
import type { BusMessage, Subscription } from '../bus/bus.ts';
import { RabbitMQBus } from '../amqp/rabbitmq-bus.ts';
import { BLACKLIST_TOPIC } from '../datasets/blacklist.ts';
import { CATALOG_TOPIC } from '../datasets/catalog.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** One event seen on a fanout exchange, summarized for the dashboard. */
export interface BusEventView {
  /** Sequence number in this stack run. */
  seq: number;
  /** Epoch ms it reached the dashboard. */
  at: number;
  exchange: string;
  type: string;
  version: number | null;
  origin: string | null;
  /** Dashboard receipt - published_at, when the publisher stamped it. */
  transit_ms: number | null;
  /** Human-readable: the character's code and name, the jti, ... */
  summary: string;
  /** The character code / jti / id the event is about. */
  subject: string | null;
  bytes: number;
}

export const WATCHED_TOPICS = [CATALOG_TOPIC, BLACKLIST_TOPIC] as const;

/**
 * Subscribes to the fanout exchanges itself (its own instance id and queues,
 * straight to the broker, never through a child's proxy) and keeps the last
 * events for the dashboard.
 */
export class BusMonitor {
  readonly #bus: RabbitMQBus;
  readonly #log: Logger;
  readonly #keep: number;
  readonly #events: BusEventView[] = [];
  readonly #listeners = new Set<(event: BusEventView) => void>();
  readonly #subscriptions: Subscription[] = [];
  #seq = 0;
  #closing: Promise<void> | undefined;

  constructor(options: { rabbitmqUrl: string; logger: Logger; keep?: number }) {
    this.#log = options.logger;
    this.#keep = options.keep ?? 50;
    this.#bus = new RabbitMQBus({
      url: options.rabbitmqUrl,
      instanceId: `stack-dashboard-${randomBytes(4).toString('hex')}`,
      // The dashboard's queues go soon after it does.
      queueExpiresMs: 60_000,
      logger: options.logger,
    });
  }

  get connected(): boolean {
    return this.#bus.state === 'up';
  }

  /** Subscribes to every watched exchange; resolves once all are bound. */
  async start(): Promise<void> {
    for (const topic of WATCHED_TOPICS) {
      if (this.#closing) return;
      const subscription = await this.#bus.subscribe(topic, (message) => this.#record(message), {
        onError: (err) => this.#log.warn({ topic, err: describeError(err) }, 'dashboard bus consumer error'),
      });
      this.#subscriptions.push(subscription);
    }
  }

  /** The last events, oldest first. */
  recent(): BusEventView[] {
    return [...this.#events];
  }

  onEvent(listener: (event: BusEventView) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #record(message: BusMessage): void {
    const at = Date.now();
    const event = summarize(message, at, ++this.#seq);
    this.#events.push(event);
    if (this.#events.length > this.#keep) this.#events.shift();
    for (const listener of this.#listeners) listener(event);
  }

  /** Removes its queues and closes the connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled(this.#subscriptions.map((s) => s.close()));
      await this.#bus.close();
    })();
    return this.#closing;
  }
}

export function summarize(message: BusMessage, at: number, seq: number): BusEventView {
  const base: BusEventView = {
    seq,
    at,
    exchange: message.topic,
    type: 'unreadable',
    version: null,
    origin: null,
    transit_ms: null,
    summary: '',
    subject: null,
    bytes: message.body.length,
  };
  let body: unknown;
  try {
    body = JSON.parse(message.body.toString('utf8'));
  } catch {
    return { ...base, summary: `not JSON (${message.body.length} bytes)` };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ...base, summary: 'not a JSON object' };
  }
  const e = body as Record<string, unknown>;
  const type = typeof e.type === 'string' ? e.type : 'unknown';
  const version = typeof e.version === 'number' ? e.version : null;
  const origin = typeof e.origin === 'string' ? e.origin : null;
  const transit = typeof e.published_at === 'number' ? Math.max(0, at - e.published_at) : null;
  let summary = '';
  let subject: string | null = null;
  switch (type) {
    case 'upsert': {
      const c = (e.character ?? {}) as Record<string, unknown>;
      subject = str(c.code);
      summary = `${str(c.code) ?? '?'} "${str(c.name) ?? ''}" (match_label ${str(c.match_label) ?? '-'})`;
      break;
    }
    case 'delete':
      subject = str(e.character_id);
      summary = `character ${subject ?? '?'}`;
      break;
    case 'full_refresh': {
      const n = Array.isArray(e.characters) ? e.characters.length : 0;
      summary = `${n} characters`;
      break;
    }
    case 'blacklist_added': {
      subject = str(e.jti);
      const exp = typeof e.expire_at === 'number' ? new Date(e.expire_at * 1000).toISOString() : '?';
      summary = `jti ${subject ?? '?'} revoked until ${exp}`;
      break;
    }
    default:
      summary = `${Object.keys(e).length} fields`;
  }
  return { ...base, type, version, origin, transit_ms: transit, summary, subject };
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}
