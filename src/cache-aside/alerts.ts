import { IncomingWebhook } from '@slack/webhook';
import type { IncomingWebhookSendArguments } from '@slack/webhook';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { integerRangeOption } from '../options.ts';
import { BackgroundTasks } from './background.ts';
import type { BreakerTransition } from './breaker.ts';
import { classifyRedisError, errorTypeName } from './redis-errors.ts';

/** A Slack block (the type comes through `@slack/webhook`, which depends on `@slack/types`). */
export type SlackBlock = NonNullable<IncomingWebhookSendArguments['blocks']>[number];

export interface AlertMessage {
  text: string;
  blocks?: SlackBlock[];
}

/** Where alerts go: Slack's incoming webhook, or the log. */
export interface AlertSink {
  /** For logs: never the webhook URL (it is a secret). */
  readonly kind: string;
  send(message: AlertMessage): Promise<void>;
}

/** Slack incoming webhook (`@slack/webhook`), each send bounded by `timeoutMs`, no retries. */
export function slackWebhookSink(url: string, timeoutMs: number): AlertSink {
  const webhook = new IncomingWebhook(url, { timeout: timeoutMs });
  return {
    kind: 'slack',
    async send(message) {
      try {
        await webhook.send(message);
      } catch (err) {
        // Slack's errors may quote the request; the URL must not reach a log.
        const status = (err as { statusCode?: unknown }).statusCode;
        const reason = err instanceof Error ? err.message.split(url).join('<webhook>') : 'failed';
        throw new Error(
          `Slack webhook failed${typeof status === 'number' ? ` (HTTP ${status})` : ''}: ${reason}`,
        );
      }
    },
  };
}

/** Alerts as warn-level log lines (SLACK_WEBHOOK_URL unset). */
export function logAlertSink(logger: Logger): AlertSink {
  return {
    kind: 'log',
    send(message) {
      logger.warn({ alert: message.text }, 'cache alert');
      return Promise.resolve();
    },
  };
}

export interface CacheAlertsOptions {
  /** Where to send; default: Slack when `webhookUrl` is set, else the log. */
  sink?: AlertSink;
  /** SLACK_WEBHOOK_URL. */
  webhookUrl?: string | undefined;
  /** @default 5000 */
  webhookTimeoutMs?: number;
  /** Per cache key, between two alerts (ALERT_COOLDOWN_MS; the seed's ALERT_COOLDOWN). @default 600000 */
  cooldownMs?: number;
  /** Distinct cache keys tracked at once; a new key past it is not alerted (the seed's 6). @default 6 */
  maxKeys?: number;
  /** Alerts being sent at once; more are dropped (and counted). @default 20 */
  maxPending?: number;
  /** Named in every alert, e.g. `catalog@host-1`. */
  source?: string;
  clock?: Clock;
  logger?: Logger;
}

export interface AlertStats {
  sink: string;
  sent: number;
  failed: number;
  suppressed_cooldown: number;
  suppressed_key_cap: number;
  dropped: number;
  /** Cache keys alerted within the cooldown. */
  tracked_keys: string[];
}

/** Characters of the stack an alert carries (the seed's 500). */
export const STACK_EXCERPT = 500;

/** Removes credentials from URLs in free text (a Redis URL in an error message). */
function scrub(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/\s@:]*:[^@\s/]*@/gi, '$1***@');
}

/** Slack mrkdwn needs &, < and > escaped. */
function escapeSlack(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export interface ResolvedCacheAlertsOptions {
  sink: AlertSink;
  cooldownMs: number;
  maxKeys: number;
  maxPending: number;
  source: string | undefined;
  clock: Clock;
  logger: Logger;
}

/** Merges the defaults and checks the options (OptionRangeError), at construction. */
export function normalizeCacheAlertsOptions(options: CacheAlertsOptions): ResolvedCacheAlertsOptions {
  const logger = (options.logger ?? silentLogger).child({ component: 'cache-alerts' });
  return {
    sink:
      options.sink ??
      (options.webhookUrl
        ? slackWebhookSink(options.webhookUrl, options.webhookTimeoutMs ?? 5000)
        : logAlertSink(logger)),
    cooldownMs: integerRangeOption('cooldownMs', options.cooldownMs, 600_000, 0),
    maxKeys: integerRangeOption('maxKeys', options.maxKeys, 6, 1),
    maxPending: options.maxPending ?? 20,
    source: options.source,
    clock: options.clock ?? systemClock,
    logger,
  };
}

/**
 * Seed 003's Slack alerts: at most one per cache key per cooldown, at most
 * `maxKeys` distinct keys tracked (a new key past that is not alerted), each
 * naming the key, the error type and the first 500 characters of the stack;
 * plus one when the breaker opens and one when it closes. Sending happens in
 * the background: `keyError()` returns at once, a failing or slow webhook is
 * logged and never thrown, and `close()` waits for what is being sent.
 */
export class CacheAlerts {
  readonly #sink: AlertSink;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #maxKeys: number;
  readonly #source: string | undefined;
  readonly #tasks: BackgroundTasks;
  #cooldownMs: number;
  /** Cache key name -> when it was last alerted. */
  readonly #lastAlert = new Map<string, number>();
  readonly #stats = { sent: 0, failed: 0, suppressed_cooldown: 0, suppressed_key_cap: 0 };
  #closing: Promise<void> | undefined;

  constructor(options: CacheAlertsOptions = {}) {
    const o = normalizeCacheAlertsOptions(options);
    this.#logger = o.logger;
    this.#sink = o.sink;
    this.#clock = o.clock;
    this.#cooldownMs = o.cooldownMs;
    this.#maxKeys = o.maxKeys;
    this.#source = o.source;
    this.#tasks = new BackgroundTasks(o.maxPending);
  }

  get cooldownMs(): number {
    return this.#cooldownMs;
  }

  set cooldownMs(ms: number) {
    this.#cooldownMs = integerRangeOption('cooldownMs', ms, undefined, 0);
  }

  stats(): AlertStats {
    this.#prune(this.#clock.now());
    return {
      sink: this.#sink.kind,
      ...this.#stats,
      dropped: this.#tasks.dropped,
      tracked_keys: [...this.#lastAlert.keys()],
    };
  }

  /**
   * A Redis error under a cache key (the seed's `_send_slack_alert`). Returns
   * what happened: `queued`, or why not (`cooldown`, `key_cap`, `dropped`,
   * `closed`).
   */
  keyError(
    cacheKeyName: string,
    what: string,
    err: unknown,
  ): 'queued' | 'cooldown' | 'key_cap' | 'dropped' | 'closed' {
    if (this.#closing) return 'closed';
    const now = this.#clock.now();
    this.#prune(now);
    if (this.#lastAlert.has(cacheKeyName)) {
      this.#stats.suppressed_cooldown++;
      return 'cooldown';
    }
    if (this.#lastAlert.size >= this.#maxKeys) {
      this.#stats.suppressed_key_cap++;
      return 'key_cap';
    }
    this.#lastAlert.set(cacheKeyName, now);
    const type = errorTypeName(err);
    const kind = classifyRedisError(err);
    const stack = scrub(
      err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err),
    ).slice(0, STACK_EXCERPT);
    const source = this.#source ? ` | source: ${this.#source}` : '';
    const text = `[cachecast] ${what} | cache key: ${cacheKeyName} | error: ${type} (${kind})${source}\n${stack}`;
    const blocks: SlackBlock[] = [
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          text: escapeSlack(`:warning: *cachecast cache-aside: ${what}*`),
        },
        fields: [
          { type: 'mrkdwn', text: `*Cache key*\n\`${escapeSlack(cacheKeyName)}\`` },
          { type: 'mrkdwn', text: `*Error type*\n\`${escapeSlack(type)}\` (${kind})` },
          ...(this.#source
            ? [{ type: 'mrkdwn' as const, text: `*Source*\n${escapeSlack(this.#source)}` }]
            : []),
        ],
      },
      { type: 'section', text: { type: 'mrkdwn', text: `\`\`\`${escapeSlack(stack)}\`\`\`` } },
    ];
    return this.#send({ text, blocks }) ? 'queued' : 'dropped';
  }

  /** The breaker opened or closed (a failed trial that re-opens it is only logged: it was open already). */
  breakerChanged(t: BreakerTransition): void {
    const s = t.stats;
    let text: string;
    if (t.to === 'open' && t.from === 'closed') {
      text =
        `[cachecast] Redis circuit breaker OPEN: ${s.recent_fail_count} failures within ${s.failure_window_size} s ` +
        `across ${s.recent_fail_keys} cache keys (threshold ${s.failure_threshold}); Redis is skipped for ` +
        `${s.timeout} s, reads go to the database`;
    } else if (t.to === 'closed') {
      text = `[cachecast] Redis circuit breaker CLOSED: the trial call succeeded; reads use Redis again`;
    } else {
      this.#logger.info({ from: t.from, to: t.to, reason: t.reason }, 'circuit breaker');
      return;
    }
    if (this.#source) text += ` | source: ${this.#source}`;
    if (this.#closing) {
      this.#logger.warn({ alert: text }, 'cache alert after close');
      return;
    }
    this.#send({ text, blocks: [{ type: 'section', text: { type: 'mrkdwn', text: escapeSlack(text) } }] });
  }

  #send(message: AlertMessage): boolean {
    return this.#tasks.run(
      async () => {
        await this.#sink.send(message);
        this.#stats.sent++;
      },
      (err) => {
        this.#stats.failed++;
        this.#logger.warn(
          { err: err instanceof Error ? err.message : String(err), sink: this.#sink.kind },
          'cache alert not delivered',
        );
      },
    );
  }

  #prune(now: number): void {
    for (const [key, at] of this.#lastAlert) {
      if (now - at >= this.#cooldownMs) this.#lastAlert.delete(key);
    }
  }

  /** Idempotent: stops taking alerts and waits for the ones being sent (each bounded by the webhook timeout). */
  close(): Promise<void> {
    this.#closing ??= this.#tasks.drain();
    return this.#closing;
  }
}
