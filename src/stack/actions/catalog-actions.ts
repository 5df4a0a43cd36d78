import type pg from 'pg';
import type { StackProcessSpec } from '../config.ts';
import { catalogVersion } from '../setup.ts';
import { ActionError } from './action-error.ts';
import type { Targets } from './targets.ts';
import { round, sleep } from './targets.ts';

export interface FollowResult {
  process: string;
  /** ms from the write's response until this replica held its version; null when not within the limit. */
  after_ms: number | null;
  version: number | null;
  state: string | null;
}

/**
 * Reads and writes of the catalog through its API; each write then follows
 * every process holding a catalog replica until it holds the new version.
 */
export class CatalogActions {
  readonly #t: Targets;
  readonly #pool: pg.Pool;
  readonly #followMs: number;

  constructor(targets: Targets, pool: pg.Pool, followMs: number) {
    this.#t = targets;
    this.#pool = pool;
    this.#followMs = followMs;
  }

  async characters(): Promise<unknown[]> {
    const res = await this.#t.call(
      'catalog',
      this.#t.url(this.#t.one('catalog'), '/api/v1/characters/catalog'),
    );
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
    const version = await catalogVersion(this.#pool);
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
    const res = await this.#t.call(
      'catalog',
      this.#t.url(this.#t.one('catalog'), `/admin/characters/${encodeURIComponent(code)}`),
      { ...init, headers: { ...init.headers, authorization: `Bearer ${this.#t.config.adminToken}` } },
    );
    return { res, started, written: performance.now() };
  }

  #report(what: string, version: number, replicas: FollowResult[]): void {
    this.#t.report(
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
    const holders = this.#t.config.processes.filter(
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
      const res = await fetch(this.#t.url(p, '/replicas', true), { signal: AbortSignal.timeout(1000) });
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
}
