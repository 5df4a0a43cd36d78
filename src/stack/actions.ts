import type pg from 'pg';
import { describeError } from '../errors.ts';
import type { BrokerProxies } from './broker-proxy.ts';
import type { CeleryClient } from './celery-client.ts';
import type { StackConfig, StackProcessSpec } from './config.ts';
import { catalogVersion } from './setup.ts';
import type { Supervisor } from './supervisor.ts';

/** A failed action: an HTTP status for the dashboard's API and a stable code. */
export class ActionError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ActionError';
  }
}

export interface AuthzCheck {
  instance: string;
  /** HTTP status, or null when the instance did not answer. */
  status: number | null;
  allow: boolean;
  /** The deny code (`token_revoked`...) or the transport error. */
  error: string | null;
  user_id: string | null;
}

export interface PropagationResult {
  instance: string;
  /** ms from the logout response to the first `401 token_revoked`; null when not within the limit. */
  refused_after_ms: number | null;
  /** Checks sent before (and including) the refusal. */
  checks: number;
  /** The last answer seen. */
  last: AuthzCheck;
}

export interface FollowResult {
  process: string;
  /** ms from the write's response until this replica held its version; null when not within the limit. */
  after_ms: number | null;
  version: number | null;
  state: string | null;
}

export interface ActionsOptions {
  config: StackConfig;
  supervisor: Supervisor;
  proxies: BrokerProxies;
  pool: pg.Pool;
  celery: CeleryClient;
  /** A line for the dashboard's activity log (and the terminal). */
  report: (level: 'info' | 'warn', message: string) => void;
  /** Propagation polling: interval and limit. @default 1 / 5000 */
  pollIntervalMs?: number;
  propagationLimitMs?: number;
  /** How long a catalog write's followers are awaited. @default 5000 */
  followLimitMs?: number;
}

/**
 * The dashboard's actions, each done against the running processes the way a
 * client would (HTTP to auth / ext-authz / catalog, a Celery task over AMQP),
 * with what it shows measured: propagation to every instance, per instance.
 */
export class StackActions {
  readonly #o: ActionsOptions;
  readonly #pollMs: number;
  readonly #limitMs: number;
  readonly #followMs: number;
  #lastToken: string | undefined;

  constructor(options: ActionsOptions) {
    this.#o = options;
    this.#pollMs = options.pollIntervalMs ?? 1;
    this.#limitMs = options.propagationLimitMs ?? 5000;
    this.#followMs = options.followLimitMs ?? 5000;
  }

  #processes(service: StackProcessSpec['service']): StackProcessSpec[] {
    return this.#o.config.processes.filter((p) => p.service === service);
  }

  #one(service: StackProcessSpec['service']): StackProcessSpec {
    const p = this.#processes(service)[0];
    if (!p) throw new ActionError(500, 'no_process', `the stack has no ${service}`);
    return p;
  }

  #url(p: StackProcessSpec, path: string, admin = false): string {
    const port = admin ? p.adminPort : p.port;
    return `http://${this.#o.config.host}:${port}${path}`;
  }

  // ------------------------------------------------------------- auth

  async login(userId: string): Promise<{
    access_token: string;
    token_type: string;
    expires_in: number;
    sub: string | null;
    jti: string | null;
    login_ms: number;
    checks: AuthzCheck[];
  }> {
    if (!/^[\w.@:-]{1,100}$/.test(userId)) {
      throw new ActionError(400, 'invalid_user_id', 'user_id: 1-100 letters, digits or . _ - @ :');
    }
    const auth = this.#one('auth');
    const started = performance.now();
    const res = await this.#call('auth', this.#url(auth, '/api/v1/auth/login'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: userId }),
    });
    const loginMs = performance.now() - started;
    const body = (await res.json().catch(() => null)) as Record<string, unknown> | null;
    if (res.status !== 200 || typeof body?.access_token !== 'string') {
      throw new ActionError(502, 'login_failed', `auth answered ${res.status}: ${JSON.stringify(body)}`);
    }
    const token = body.access_token;
    this.#lastToken = token;
    const claims = jwtClaims(token);
    const checks = await this.checkToken(token);
    this.#o.report(
      'info',
      `logged in ${userId} (jti ${claims.jti ?? '?'}); ext-authz: ${checks.map((c) => `${c.instance} ${c.status ?? 'down'}`).join(', ')}`,
    );
    return {
      access_token: token,
      token_type: typeof body.token_type === 'string' ? body.token_type : 'Bearer',
      expires_in: typeof body.expires_in === 'number' ? body.expires_in : 0,
      sub: claims.sub,
      jti: claims.jti,
      login_ms: round(loginMs),
      checks,
    };
  }

  /** Sends the token to every ext-authz instance once. */
  checkToken(token: string | undefined = this.#lastToken): Promise<AuthzCheck[]> {
    if (!token) throw new ActionError(400, 'no_token', 'log in first');
    return Promise.all(this.#processes('ext-authz').map((p) => this.#check(p, token)));
  }

  async #check(p: StackProcessSpec, token: string): Promise<AuthzCheck> {
    try {
      const res = await fetch(this.#url(p, '/api/v1/check'), {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(2000),
      });
      const text = await res.text();
      let error: string | null = null;
      if (res.status !== 200) {
        try {
          const parsed = JSON.parse(text) as { error?: unknown };
          error = typeof parsed.error === 'string' ? parsed.error : `status ${res.status}`;
        } catch {
          error = `status ${res.status}`;
        }
      }
      return {
        instance: p.id,
        status: res.status,
        allow: res.status === 200,
        error,
        user_id: res.headers.get('x-user-id'),
      };
    } catch (err) {
      return { instance: p.id, status: null, allow: false, error: describeError(err), user_id: null };
    }
  }

  /**
   * Logs the token out, then checks it on every ext-authz instance in a tight
   * loop until each refuses it with `token_revoked`: the propagation time.
   */
  async logout(token: string | undefined = this.#lastToken): Promise<{
    status: number;
    logout_ms: number;
    jti: string | null;
    instances: PropagationResult[];
  }> {
    if (!token) throw new ActionError(400, 'no_token', 'log in first');
    const auth = this.#one('auth');
    const started = performance.now();
    const res = await this.#call('auth', this.#url(auth, '/api/v1/auth/logout'), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    const loggedOut = performance.now();
    await res.arrayBuffer().catch(() => undefined);
    if (res.status !== 204) {
      throw new ActionError(502, 'logout_failed', `auth answered ${res.status} to the logout`);
    }
    if (token === this.#lastToken) this.#lastToken = undefined;
    const instances = await Promise.all(
      this.#processes('ext-authz').map((p) => this.#untilRevoked(p, token, loggedOut)),
    );
    const jti = jwtClaims(token).jti;
    this.#o.report(
      instances.every((i) => i.refused_after_ms !== null) ? 'info' : 'warn',
      `logged out jti ${jti ?? '?'}; refused by ${instances
        .map((i) =>
          i.refused_after_ms === null
            ? `${i.instance}: NOT within ${this.#limitMs} ms (${i.last.status ?? 'down'} ${i.last.error ?? ''})`
            : `${i.instance} after ${i.refused_after_ms} ms`,
        )
        .join(', ')}`,
    );
    return { status: res.status, logout_ms: round(loggedOut - started), jti, instances };
  }

  async #untilRevoked(p: StackProcessSpec, token: string, from: number): Promise<PropagationResult> {
    let checks = 0;
    for (;;) {
      const last = await this.#check(p, token);
      checks++;
      const now = performance.now();
      if (last.status === 401 && last.error === 'token_revoked') {
        return { instance: p.id, refused_after_ms: round(now - from), checks, last };
      }
      if (now - from > this.#limitMs) return { instance: p.id, refused_after_ms: null, checks, last };
      await sleep(this.#pollMs);
    }
  }

  // ------------------------------------------------------------- catalog

  async characters(): Promise<unknown[]> {
    const res = await this.#call('catalog', this.#url(this.#one('catalog'), '/api/v1/characters/catalog'));
    const body: unknown = await res.json().catch(() => null);
    if (res.status !== 200 || !Array.isArray(body)) {
      throw new ActionError(502, 'catalog_failed', `catalog answered ${res.status}`);
    }
    return body as unknown[];
  }

  async upsertCharacter(
    code: string,
    input: Record<string, unknown>,
  ): Promise<{
    status: number;
    character: unknown;
    version: number;
    write_ms: number;
    replicas: FollowResult[];
  }> {
    const { res, started, written } = await this.#adminCall(code, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(input),
    });
    const body = (await res.json().catch(() => null)) as { character?: unknown; version?: unknown } | null;
    if ((res.status !== 200 && res.status !== 201) || typeof body?.version !== 'number') {
      throw new ActionError(
        res.status >= 400 && res.status < 500 ? 400 : 502,
        'upsert_failed',
        `catalog answered ${res.status}: ${JSON.stringify(body)}`,
      );
    }
    const replicas = await this.#follow(body.version, written);
    this.#report(`${res.status === 201 ? 'created' : 'updated'} ${code}`, body.version, replicas);
    return {
      status: res.status,
      character: body.character,
      version: body.version,
      write_ms: round(written - started),
      replicas,
    };
  }

  async deleteCharacter(code: string): Promise<{
    status: number;
    version: number;
    write_ms: number;
    replicas: FollowResult[];
  }> {
    const { res, started, written } = await this.#adminCall(code, { method: 'DELETE' });
    const text = await res.text();
    if (res.status === 404) throw new ActionError(404, 'not_found', `no character with code ${code}`);
    if (res.status !== 204)
      throw new ActionError(502, 'delete_failed', `catalog answered ${res.status}: ${text}`);
    // The delete answers no version: the source's is at least the delete's.
    const version = await catalogVersion(this.#o.pool);
    const replicas = await this.#follow(version, written);
    this.#report(`deleted ${code}`, version, replicas);
    return { status: res.status, version, write_ms: round(written - started), replicas };
  }

  /** One call to the catalog's admin API for `code`, timed (the write's own time). */
  async #adminCall(
    code: string,
    init: { method: string; headers?: Record<string, string>; body?: string },
  ): Promise<{ res: Response; started: number; written: number }> {
    const started = performance.now();
    const res = await this.#call(
      'catalog',
      this.#url(this.#one('catalog'), `/admin/characters/${encodeURIComponent(code)}`),
      { ...init, headers: { ...init.headers, authorization: `Bearer ${this.#o.config.adminToken}` } },
    );
    return { res, started, written: performance.now() };
  }

  #report(what: string, version: number, replicas: FollowResult[]): void {
    this.#o.report(
      replicas.every((r) => r.after_ms !== null) ? 'info' : 'warn',
      `${what} (version ${version}); replicas: ${replicas
        .map((r) =>
          r.after_ms === null
            ? `${r.process} NOT within ${this.#followMs} ms (${r.state ?? 'down'}, v${r.version ?? '?'})`
            : `${r.process} after ${r.after_ms} ms`,
        )
        .join(', ')}`,
    );
  }

  /** Polls every process holding a catalog replica until it has `version`. */
  #follow(version: number, from: number): Promise<FollowResult[]> {
    const holders = this.#o.config.processes.filter(
      (p) => p.service === 'catalog' || p.service === 'match-worker',
    );
    return Promise.all(
      holders.map(async (p): Promise<FollowResult> => {
        let last: { version: number | null; state: string | null } = { version: null, state: null };
        for (;;) {
          last = await this.#catalogReplica(p);
          const now = performance.now();
          if (last.version !== null && last.version >= version) {
            return { process: p.id, after_ms: round(now - from), ...last };
          }
          if (now - from > this.#followMs) return { process: p.id, after_ms: null, ...last };
          await sleep(2);
        }
      }),
    );
  }

  async #catalogReplica(p: StackProcessSpec): Promise<{ version: number | null; state: string | null }> {
    try {
      const res = await fetch(this.#url(p, '/replicas', true), { signal: AbortSignal.timeout(1000) });
      const body: unknown = await res.json();
      const replica = Array.isArray(body)
        ? (body as Array<{ dataset?: unknown; version?: unknown; state?: unknown }>).find(
            (r) => r.dataset === 'catalog',
          )
        : undefined;
      return {
        version: typeof replica?.version === 'number' ? replica.version : null,
        state: typeof replica?.state === 'string' ? replica.state : null,
      };
    } catch {
      return { version: null, state: null };
    }
  }

  // ------------------------------------------------------------- match

  async match(
    classification: { major_category?: string; middle_category?: string; minor_category?: string },
    userId: string | undefined,
  ): Promise<{
    task_id: string;
    status: string;
    result: unknown;
    published_ms: number;
    total_ms: number;
    worker: string | null;
  }> {
    const workers = this.#processes('match-worker');
    const before = await Promise.all(workers.map((w) => this.#taskCount(w)));
    let call;
    try {
      call = await this.#o.celery.match(classification, userId ? { userId } : {});
    } catch (err) {
      throw new ActionError(504, 'match_failed', describeError(err));
    }
    // The worker counts a task once it is acked: after the result is stored and, for a task
    // with a user, after the broker confirmed its grant (a disk write), so allow for a slow one.
    let worker: string | null = null;
    const deadline = Date.now() + 5000;
    while (worker === null && Date.now() < deadline) {
      const after = await Promise.all(workers.map((w) => this.#taskCount(w)));
      // A count that went down is a restarted worker's: it counts from 0 again.
      const i = after.findIndex((n, k) => {
        const was = before[k];
        return n !== null && was !== null && was !== undefined && n > (n < was ? 0 : was);
      });
      if (i >= 0) worker = workers[i]!.id;
      else await sleep(10);
    }
    const result = call.meta.result as { code?: unknown; name?: unknown } | null;
    this.#o.report(
      'info',
      `match ${JSON.stringify(classification.middle_category ?? null)} -> ${call.meta.status} ${
        result && typeof result === 'object' ? `${String(result.code)} "${String(result.name)}"` : 'null'
      } in ${round(call.totalMs)} ms${worker ? ` (by ${worker})` : ''}`,
    );
    return {
      task_id: call.taskId,
      status: call.meta.status,
      result: call.meta.result,
      published_ms: round(call.publishedMs),
      total_ms: round(call.totalMs),
      worker,
    };
  }

  async #taskCount(p: StackProcessSpec): Promise<number | null> {
    try {
      const res = await fetch(this.#url(p, '/worker', true), {
        signal: AbortSignal.timeout(1000),
        headers: { authorization: `Bearer ${this.#o.config.adminPortToken}` },
      });
      const stats = (await res.json()) as Record<string, unknown>;
      let n = 0;
      for (const key of ['success', 'no_match', 'expired', 'dead_lettered', 'failed']) {
        if (typeof stats[key] === 'number') n += stats[key];
      }
      return n;
    } catch {
      return null;
    }
  }

  // ------------------------------------------------------------- faults

  disconnect(
    id: string,
    ms = this.#o.config.disconnectMs,
  ): { process: string; ms: number; restore_at: number } {
    this.#known(id);
    const ok = this.#o.proxies.disconnect(id, ms, () =>
      this.#o.report('info', `${id}: broker link restored; it reconnects and resyncs`),
    );
    if (!ok) throw new ActionError(409, 'no_proxy', `${id} is not behind a broker proxy`);
    this.#o.report('warn', `${id}: broker connections cut; new ones refused for ${ms / 1000} s`);
    return { process: id, ms, restore_at: Date.now() + ms };
  }

  kill(id: string): { process: string; pid: number | undefined } {
    this.#known(id);
    const pid = this.#o.supervisor.view(id)?.pid;
    if (!this.#o.supervisor.kill(id, 'SIGKILL')) {
      throw new ActionError(409, 'not_running', `${id} is not running`);
    }
    this.#o.report('warn', `${id}: sent SIGKILL to pid ${pid}`);
    return { process: id, pid };
  }

  #known(id: string): void {
    if (!this.#o.config.processes.some((p) => p.id === id)) {
      throw new ActionError(404, 'unknown_process', `no process ${JSON.stringify(id)} in the stack`);
    }
  }

  async #call(what: string, url: string, init: RequestInit = {}): Promise<Response> {
    try {
      return await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
    } catch (err) {
      throw new ActionError(503, `${what}_unreachable`, `${what} did not answer: ${describeError(err)}`);
    }
  }
}

/** The claims a dashboard shows (sub, jti, exp); the signature is the services' business. */
export function jwtClaims(token: string): { sub: string | null; jti: string | null; exp: number | null } {
  try {
    const payload = JSON.parse(
      Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'),
    ) as Record<string, unknown>;
    return {
      sub: typeof payload.sub === 'string' ? payload.sub : null,
      jti: typeof payload.jti === 'string' ? payload.jti : null,
      exp: typeof payload.exp === 'number' ? payload.exp : null,
    };
  } catch {
    return { sub: null, jti: null, exp: null };
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
