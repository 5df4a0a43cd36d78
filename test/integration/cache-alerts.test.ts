import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CacheAlerts, STACK_EXCERPT } from '../../src/cache-aside/alerts.ts';
import { CacheAside } from '../../src/cache-aside/cache-aside.ts';
import { defineCacheKeys } from '../../src/cache-aside/cache-key.ts';
import { CachecastError } from '../../src/errors.ts';
import type { Logger } from '../../src/logger.ts';
import { REDIS_URL, uniqueName } from '../support/env.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { waitFor } from '../support/wait.ts';

interface SlackPayload {
  text: string;
  blocks?: Array<{ type: string; text?: { text: string }; fields?: Array<{ text: string }> }>;
}

/** A local stand-in for Slack's incoming webhook: records each POST; its answer can be changed. */
class FakeSlack {
  readonly received: Array<{ path: string; body: SlackPayload }> = [];
  respond: (res: ServerResponse) => void = (res) => res.writeHead(200).end('ok');
  readonly #server: Server;
  readonly #held = new Set<ServerResponse>();
  url = '';

  constructor() {
    this.#server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.received.push({
          path: req.url ?? '',
          body: JSON.parse(Buffer.concat(chunks).toString()) as SlackPayload,
        });
        this.#held.add(res);
        res.on('close', () => this.#held.delete(res));
        this.respond(res);
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    // The path plays the part of Slack's secret.
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/services/T0/B0/sekret-path`;
    return this;
  }

  texts(): string[] {
    return this.received.map((r) => r.body.text);
  }

  async close(): Promise<void> {
    for (const res of this.#held) res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A logger that keeps every line, to check what reached the logs. */
function recordingLogger(lines: string[]): Logger {
  const log =
    (level: string) =>
    (obj: object, msg?: string): void =>
      void lines.push(`${level} ${msg ?? ''} ${JSON.stringify(obj)}`);
  const logger: Logger = {
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: () => logger,
  };
  return logger;
}

function errorWithLongStack(message: string): Error {
  const err = new CachecastError('CACHE_TIMEOUT', message);
  err.stack = `CachecastError: ${message}\n${Array.from({ length: 40 }, (_, i) => `    at frame${i} (file.ts:${i}:1)`).join('\n')}`;
  return err;
}

let slack: FakeSlack;
before(async () => {
  slack = await new FakeSlack().start();
});
after(async () => {
  await slack.close();
});

describe('cache alerts, received by a local stand-in for Slack', () => {
  it('names the key, the error type and the first 500 characters of the stack', async () => {
    const alerts = new CacheAlerts({ webhookUrl: slack.url, clock: new FakeClock(), source: 'catalog@test' });
    const err = errorWithLongStack('Redis did not answer within 100 ms');
    assert.equal(alerts.keyError('USER_CHARACTERS', 'Cache read failed', err), 'queued');
    await alerts.close();
    assert.equal(slack.received.length, 1);
    const { path, body } = slack.received[0]!;
    assert.equal(path, '/services/T0/B0/sekret-path');
    assert.match(body.text, /Cache read failed/);
    assert.match(body.text, /cache key: USER_CHARACTERS/);
    assert.match(body.text, /error: CachecastError\[CACHE_TIMEOUT\] \(timeout\)/);
    assert.match(body.text, /source: catalog@test/);
    const excerpt = err.stack!.slice(0, STACK_EXCERPT);
    assert.ok(body.text.endsWith(`\n${excerpt}`), 'the stack, cut at 500 characters');
    assert.ok(err.stack!.length > STACK_EXCERPT + 100);
    assert.ok(!body.text.includes(err.stack!.slice(0, STACK_EXCERPT + 1)));
    const blocks = JSON.stringify(body.blocks);
    assert.match(blocks, /USER_CHARACTERS/);
    assert.match(blocks, /CACHE_TIMEOUT/);
    assert.match(blocks, /frame0/);
    slack.received.length = 0;
  });

  it('sends at most one alert per cache key per cooldown', async () => {
    const clock = new FakeClock();
    const alerts = new CacheAlerts({ webhookUrl: slack.url, clock, cooldownMs: 600_000 });
    const err = new Error('boom');
    assert.equal(alerts.keyError('A', 'Cache read failed', err), 'queued');
    assert.equal(alerts.keyError('A', 'Cache write failed', err), 'cooldown');
    assert.equal(
      alerts.keyError('B', 'Cache read failed', err),
      'queued',
      'another key has its own cooldown',
    );
    await clock.advance(599_999);
    assert.equal(alerts.keyError('A', 'Cache read failed', err), 'cooldown');
    await clock.advance(1);
    assert.equal(
      alerts.keyError('A', 'Cache read failed', err),
      'queued',
      'alerted again after the cooldown',
    );
    await alerts.close();
    // Sent concurrently, on separate connections: the order of arrival is not the order queued.
    assert.deepEqual(
      slack
        .texts()
        .map((t) => /cache key: (\w+)/.exec(t)?.[1])
        .sort(),
      ['A', 'A', 'B'],
    );
    assert.equal(alerts.stats().suppressed_cooldown, 2);
    assert.equal(alerts.stats().sent, 3);
    slack.received.length = 0;
  });

  it('tracks at most six distinct keys: a seventh is not alerted until one cools down', async () => {
    const clock = new FakeClock();
    const alerts = new CacheAlerts({ webhookUrl: slack.url, clock, cooldownMs: 60_000 });
    const err = new Error('boom');
    for (let i = 1; i <= 6; i++) assert.equal(alerts.keyError(`K${i}`, 'Cache read failed', err), 'queued');
    assert.equal(alerts.keyError('K7', 'Cache read failed', err), 'key_cap');
    assert.equal(alerts.stats().tracked_keys.length, 6);
    await clock.advance(30_000);
    assert.equal(alerts.keyError('K8', 'Cache read failed', err), 'key_cap');
    await clock.advance(30_000);
    assert.equal(
      alerts.keyError('K7', 'Cache read failed', err),
      'queued',
      'room again once the others cooled down',
    );
    await alerts.close();
    assert.equal(slack.received.length, 7);
    assert.equal(alerts.stats().suppressed_key_cap, 2);
    slack.received.length = 0;
  });

  it('sends in the background; a failing or hanging webhook is logged, never thrown, never logs the URL', async () => {
    const lines: string[] = [];
    const alerts = new CacheAlerts({
      webhookUrl: slack.url,
      webhookTimeoutMs: 300,
      clock: new FakeClock(),
      logger: recordingLogger(lines),
    });
    slack.respond = () => undefined; // never answers
    // keyError() is synchronous: it returns before the request has even left.
    assert.equal(alerts.keyError('HANG', 'Cache read failed', new Error('x')), 'queued');
    assert.equal(slack.received.length, 0);
    await waitFor(() => slack.received.length === 1, 'the webhook got the request');
    slack.respond = (res) => res.writeHead(500).end('server error');
    assert.equal(alerts.keyError('FAIL', 'Cache read failed', new Error('y')), 'queued');
    await alerts.close(); // drains: waits for the timeout of the hanging one
    assert.equal(alerts.stats().failed, 2);
    assert.equal(alerts.stats().sent, 0);
    assert.equal(lines.filter((l) => l.includes('cache alert not delivered')).length, 2);
    assert.ok(lines.some((l) => l.includes('HTTP 500')));
    for (const line of lines) assert.ok(!line.includes('sekret-path'), `the webhook URL leaked: ${line}`);
    assert.equal(alerts.keyError('LATE', 'x', new Error('z')), 'closed');
    slack.respond = (res) => res.writeHead(200).end('ok');
    slack.received.length = 0;
  });

  it('logs the alerts when no webhook is set', async () => {
    const lines: string[] = [];
    const alerts = new CacheAlerts({ clock: new FakeClock(), logger: recordingLogger(lines) });
    alerts.keyError('LOGGED', 'Cache read failed', new Error('boom'));
    await alerts.close();
    assert.ok(lines.some((l) => l.startsWith('warn cache alert') && l.includes('cache key: LOGGED')));
    assert.equal(alerts.stats().sink, 'log');
  });

  it('a cache whose Redis fails alerts per key, and alerts the breaker opening and closing', async () => {
    const Keys = defineCacheKeys({
      ONE: { template: 'one:{id}', ttlMs: 60_000 },
      TWO: { template: 'two:{id}', ttlMs: 60_000 },
    });
    const target = new URL(REDIS_URL);
    const proxy = await new TcpProxy(target.hostname, Number(target.port || 6379)).start();
    const clock = new FakeClock(Date.now());
    const cache = new CacheAside({
      redisUrl: `redis://127.0.0.1:${proxy.port}${target.pathname}`,
      keyPrefix: uniqueName('it.alerts'),
      commandTimeoutMs: 500,
      clock,
      breaker: { failureThreshold: 4, failureWindowMs: 60_000, openMs: 30_000 },
      alerts: { webhookUrl: slack.url, cooldownMs: 600_000, source: 'test' },
    });
    try {
      proxy.cut();
      // Each read fails twice (the read, then the write-back): 4 failures over two keys.
      assert.equal(await cache.getWithFallback(Keys.ONE, { id: 1 }, () => 'db-1'), 'db-1');
      await cache.settled();
      assert.equal(cache.stats().is_open, false);
      assert.equal(cache.stats().recent_fail_count, 2);
      assert.equal(await cache.getWithFallback(Keys.TWO, { id: 2 }, () => 'db-2'), 'db-2');
      await cache.settled();
      assert.equal(cache.stats().is_open, true);
      await waitFor(() => slack.received.length >= 3, 'alerts for ONE, TWO and the opening');
      const texts = slack.texts();
      const keyAlerts = texts.filter((t) => t.includes('cache key:'));
      assert.deepEqual(keyAlerts.map((t) => /cache key: (\w+)/.exec(t)?.[1]).sort(), ['ONE', 'TWO']);
      assert.ok(
        keyAlerts.every((t) => /error: CachecastError\[CACHE_CONNECT_FAILED\] \(connection\)/.test(t)),
      );
      assert.ok(texts.some((t) => /circuit breaker OPEN/.test(t) && /threshold 4/.test(t)));

      proxy.restore();
      await clock.advance(30_000);
      assert.equal(await cache.getWithFallback(Keys.ONE, { id: 'after' }, () => 'fresh'), 'fresh');
      await cache.settled();
      assert.equal(cache.stats().is_open, false);
      await waitFor(() => slack.texts().some((t) => /circuit breaker CLOSED/.test(t)), 'the closing alert');
    } finally {
      await cache.close();
      await proxy.close();
      slack.received.length = 0;
    }
  });
});
