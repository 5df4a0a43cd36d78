import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeError } from '../errors.ts';
import type { StackActions } from './actions/stack-actions.ts';
import { ActionError } from './actions/action-error.ts';
import { bearerMatches, secretEquals } from '../http/bearer.ts';
import { listen } from '../http/listen.ts';
import { sendJson } from '../http/send-json.ts';

/** A line of the stack's activity log (lifecycle, faults, action results). */
export interface ActivityLine {
  seq: number;
  at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
}

/** A file of the page other than index.html: a script module or the stylesheet. */
export interface PageFile {
  /** Its Content-Type. */
  type: string;
  body: string;
}

/** The page (src/stack/page.ts loads it). */
export interface DashboardPage {
  /** GET / and /index.html. */
  html: string;
  /** Every other file, by its path (`/dashboard.js`): the only paths served besides the page and the API. */
  files: ReadonlyMap<string, PageFile>;
}

export interface DashboardServerOptions {
  /** The page: its HTML alone, or with the files it loads. */
  page: string | DashboardPage;
  /** The whole state, as GET /api/state and the SSE `state` event send it. */
  snapshot: () => unknown;
  /** What a new SSE client gets first: the recent bus events and activity. */
  history: () => { bus: unknown[]; activity: ActivityLine[] };
  actions: StackActions;
  /** The per-run token (StackConfig.dashboardToken): `Authorization: Bearer`, or the cookie `/?token=` sets. */
  token: string;
  /**
   * True when the server binds a loopback address: a same-origin page on
   * 127.0.0.1/localhost may then act without the token. False: every request
   * but /healthz needs the token, since Host and Origin prove nothing from
   * elsewhere on the network.
   */
  loopback: boolean;
  /** @default 15000 */
  keepAliveMs?: number;
}

const MAX_BODY = 64 * 1024;

/** The page and its files: scripts and styles only from this server, none inline. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'";

/**
 * The dashboard: one page (and the script modules and stylesheet it loads),
 * a server-sent event stream (`/events`: `state` whenever it changes, `bus`
 * per event on the fanout exchanges, `activity` per log line) and JSON
 * actions under /api. Actions (which kill processes and
 * mint tokens) need the per-run token, or, on a loopback address only, a
 * browser's same-origin request (an Origin naming the loopback Host it was
 * sent to): a web page elsewhere, a rebound DNS name, or a client that simply
 * writes `Host: 127.0.0.1` and no Origin cannot drive it.
 */
export class DashboardServer {
  readonly #o: DashboardServerOptions;
  readonly #page: DashboardPage;
  readonly #server: Server;
  readonly #clients = new Set<ServerResponse>();
  readonly #keepAlive: NodeJS.Timeout;
  #lastState = '';
  #closing: Promise<void> | undefined;

  constructor(options: DashboardServerOptions) {
    this.#o = options;
    this.#page = typeof options.page === 'string' ? { html: options.page, files: new Map() } : options.page;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (res.headersSent) return void res.end();
        if (err instanceof ActionError) send(res, err.status, { error: err.code, message: err.message });
        else send(res, 500, { error: 'internal', message: describeError(err) });
      });
    });
    this.#server.keepAliveTimeout = 5000;
    this.#keepAlive = setInterval(() => {
      for (const client of this.#clients) client.write(': keep-alive\n\n');
    }, options.keepAliveMs ?? 15_000);
    this.#keepAlive.unref();
  }

  get clients(): number {
    return this.#clients.size;
  }

  /** Sends the state to every client when it differs from the last one sent. */
  pushState(): void {
    const json = JSON.stringify(this.#o.snapshot());
    if (json === this.#lastState) return;
    this.#lastState = json;
    this.#broadcastRaw('state', json);
  }

  broadcast(event: string, data: unknown): void {
    this.#broadcastRaw(event, JSON.stringify(data));
  }

  #broadcastRaw(event: string, json: string): void {
    const frame = `event: ${event}\ndata: ${json}\n\n`;
    for (const client of this.#clients) client.write(frame);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const path = url.pathname;
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (read && path === '/healthz') return send(res, 200, { status: 'ok' });
    if (read && (path === '/' || path === '/index.html') && url.searchParams.has('token')) {
      return this.#landing(res, url.searchParams.get('token') ?? '');
    }
    const withToken = this.#hasToken(req);
    if (this.#o.loopback) {
      if (!this.#loopbackHost(req)) return send(res, 403, { error: 'forbidden_host' });
    } else if (!withToken) {
      return this.#unauthorized(res, read && (path === '/' || path === '/index.html'));
    }
    if (read) {
      switch (path) {
        case '/':
        case '/index.html':
          return servePage(res, 'text/html; charset=utf-8', this.#page.html);
        case '/events':
          return this.#events(req, res);
        case '/api/state':
          return send(res, 200, this.#o.snapshot());
        case '/api/history':
          return send(res, 200, this.#o.history());
        case '/api/characters':
          return send(res, 200, await this.#o.actions.characters());
        case '/favicon.ico':
          res.writeHead(204);
          res.end();
          return;
        default: {
          // Only the page's own files, by exact path: nothing else on disk is reachable.
          const file = this.#page.files.get(path);
          if (file) return servePage(res, file.type, file.body);
          return send(res, 404, { error: 'not_found' });
        }
      }
    }
    if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed' });
    // A browser always sends Origin with a POST: none means a script, which needs the token.
    if (!this.#sameOrigin(req) || (!withToken && req.headers.origin === undefined)) {
      return send(res, 403, {
        error: 'forbidden_origin',
        message: 'actions need a same-origin page or the dashboard token',
      });
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') {
      return send(res, 415, { error: 'unsupported_media_type', message: 'send application/json' });
    }
    const body = await readJson(req);
    const actions = this.#o.actions;
    switch (path) {
      case '/api/login':
        return send(res, 200, await actions.login(field(body, 'user_id') ?? 'demo-user'));
      case '/api/logout':
        return send(res, 200, await actions.logout(field(body, 'token')));
      case '/api/check':
        return send(res, 200, { checks: await actions.checkToken(field(body, 'token')) });
      case '/api/characters/upsert': {
        const code = required(body, 'code');
        const input: Record<string, unknown> = {
          name: required(body, 'name'),
          match_label: required(body, 'match_label'),
          type_label: field(body, 'type_label') || null,
          dialog: field(body, 'dialog') || null,
        };
        if (typeof body.is_default === 'boolean') input.is_default = body.is_default;
        return send(res, 200, await actions.upsertCharacter(code, input));
      }
      case '/api/characters/delete':
        return send(res, 200, await actions.deleteCharacter(required(body, 'code')));
      case '/api/match': {
        const classification: Record<string, string> = {};
        for (const key of ['major_category', 'middle_category', 'minor_category'] as const) {
          const value = field(body, key);
          if (value) classification[key] = value;
        }
        return send(res, 200, await actions.match(classification, field(body, 'user_id') || undefined));
      }
      case '/api/disconnect': {
        const ms = typeof body.ms === 'number' ? body.ms : undefined;
        if (ms !== undefined && (!Number.isInteger(ms) || ms < 100 || ms > 600_000)) {
          throw new ActionError(400, 'invalid_body', 'ms must be an integer from 100 to 600000');
        }
        return send(res, 200, actions.disconnect(required(body, 'process'), ms));
      }
      case '/api/kill':
        return send(res, 200, actions.kill(required(body, 'process')));
      default:
        return send(res, 404, { error: 'not_found' });
    }
  }

  #events(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 1000\n\n');
    const history = this.#o.history();
    res.write(`event: history\ndata: ${JSON.stringify(history)}\n\n`);
    res.write(`event: state\ndata: ${JSON.stringify(this.#o.snapshot())}\n\n`);
    this.#clients.add(res);
    const drop = (): void => {
      this.#clients.delete(res);
    };
    req.on('close', drop);
    res.on('error', drop);
  }

  /** Host is this server (127.0.0.1:port or localhost:port): no DNS rebinding. */
  #loopbackHost(req: IncomingMessage): boolean {
    const host = req.headers.host;
    if (!host) return false;
    const port = (this.#server.address() as AddressInfo | null)?.port;
    const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const hostPort = /:(\d+)$/.exec(host)?.[1];
    const localNames = ['127.0.0.1', 'localhost', '::1'];
    return localNames.includes(name) && (hostPort === undefined || Number(hostPort) === port);
  }

  /** A POST from a browser must come from this page: its Origin names the Host it was sent to. */
  #sameOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    try {
      const parsed = new URL(origin);
      return parsed.protocol === 'http:' && parsed.host === req.headers.host;
    } catch {
      return false;
    }
  }

  /** Per port: cookies are shared by every port of a host, and two stacks may run side by side. */
  #cookieName(): string {
    return `cachecast_dashboard_${(this.#server.address() as AddressInfo | null)?.port ?? 0}`;
  }

  #hasToken(req: IncomingMessage): boolean {
    if (bearerMatches(req.headers.authorization, this.#o.token)) return true;
    const name = this.#cookieName();
    for (const pair of (req.headers.cookie ?? '').split(';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq).trim() === name)
        return secretEquals(pair.slice(eq + 1).trim(), this.#o.token);
    }
    return false;
  }

  /** `/?token=<token>`: keeps it in a cookie only this origin sends, and drops it from the address bar. */
  #landing(res: ServerResponse, token: string): void {
    if (!secretEquals(token, this.#o.token)) return this.#unauthorized(res, true);
    res.writeHead(303, {
      location: '/',
      'cache-control': 'no-store',
      'set-cookie': `${this.#cookieName()}=${this.#o.token}; Path=/; HttpOnly; SameSite=Strict`,
    });
    res.end();
  }

  #unauthorized(res: ServerResponse, page: boolean): void {
    if (!page) return send(res, 401, { error: 'unauthorized', message: 'the dashboard token is required' });
    res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(
      'This dashboard needs its token: open the URL `cachecast stack` printed (ending in ?token=...).\n',
    );
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.#server, port, host);
  }

  /** Ends every event stream and stops listening. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      clearInterval(this.#keepAlive);
      for (const client of this.#clients) client.end();
      this.#clients.clear();
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    return this.#closing;
  }
}

/** Live state: never cached by the browser. */
function send(res: ServerResponse, status: number, body: unknown): void {
  sendJson(res, status, body, { 'cache-control': 'no-store' });
}

/** The page or one of its files: rebuilt with the stack, so never cached either. */
function servePage(res: ServerResponse, type: string, body: string): void {
  res.writeHead(200, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY)
      throw new ActionError(413, 'body_too_large', `bodies are limited to ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch {
    throw new ActionError(400, 'invalid_json', 'the body must be a JSON object');
  }
}

function field(body: Record<string, unknown>, name: string): string | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new ActionError(400, 'invalid_body', `${name} must be a string`);
  return value.trim();
}

function required(body: Record<string, unknown>, name: string): string {
  const value = field(body, name);
  if (!value) throw new ActionError(400, 'invalid_body', `${name} is required`);
  return value;
}
