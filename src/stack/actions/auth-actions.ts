import { describeError } from '../../errors.ts';
import type { StackProcessSpec } from '../config.ts';
import { ActionError } from './action-error.ts';
import type { Targets } from './targets.ts';
import { round, sleep } from './targets.ts';

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

/**
 * Login, token checks and logout against auth and every ext-authz instance;
 * the logout measures how soon each instance refuses the revoked token.
 */
export class AuthActions {
  readonly #t: Targets;
  readonly #pollMs: number;
  readonly #limitMs: number;
  #lastToken: string | undefined;

  constructor(targets: Targets, pollMs: number, limitMs: number) {
    this.#t = targets;
    this.#pollMs = pollMs;
    this.#limitMs = limitMs;
  }

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
    const auth = this.#t.one('auth');
    const started = performance.now();
    const res = await this.#t.call('auth', this.#t.url(auth, '/api/v1/auth/login'), {
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
    this.#t.report(
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
    return Promise.all(this.#t.processes('ext-authz').map((p) => this.#check(p, token)));
  }

  async #check(p: StackProcessSpec, token: string): Promise<AuthzCheck> {
    try {
      const res = await fetch(this.#t.url(p, '/api/v1/check'), {
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
    const auth = this.#t.one('auth');
    const started = performance.now();
    const res = await this.#t.call('auth', this.#t.url(auth, '/api/v1/auth/logout'), {
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
      this.#t.processes('ext-authz').map((p) => this.#untilRevoked(p, token, loggedOut)),
    );
    const jti = jwtClaims(token).jti;
    this.#t.report(
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
