import type pg from 'pg';
import type { BrokerProxies } from '../broker-proxy.ts';
import type { CeleryClient } from '../celery-client.ts';
import type { StackConfig } from '../config.ts';
import type { Supervisor } from '../supervisor.ts';
import { AuthActions } from './auth-actions.ts';
import { CatalogActions } from './catalog-actions.ts';
import { FaultActions } from './fault-actions.ts';
import { MatchActions } from './match-actions.ts';
import type { Report } from './targets.ts';
import { Targets } from './targets.ts';

export interface ActionsOptions {
  config: StackConfig;
  supervisor: Supervisor;
  proxies: BrokerProxies;
  pool: pg.Pool;
  celery: CeleryClient;
  /** A line for the dashboard's activity log (and the terminal). */
  report: Report;
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
 * One flat surface for the dashboard's API; each group lives in its own file.
 */
export class StackActions {
  readonly #auth: AuthActions;
  readonly #catalog: CatalogActions;
  readonly #match: MatchActions;
  readonly #faults: FaultActions;

  constructor(options: ActionsOptions) {
    const targets = new Targets(options.config, options.report);
    this.#auth = new AuthActions(targets, options.pollIntervalMs ?? 1, options.propagationLimitMs ?? 5000);
    this.#catalog = new CatalogActions(targets, options.pool, options.followLimitMs ?? 5000);
    this.#match = new MatchActions(targets, options.celery);
    this.#faults = new FaultActions(targets, options.supervisor, options.proxies);
  }

  login(userId: string): ReturnType<AuthActions['login']> {
    return this.#auth.login(userId);
  }

  /** Sends the token (by default the last login's) to every ext-authz instance once. */
  checkToken(token?: string): ReturnType<AuthActions['checkToken']> {
    return this.#auth.checkToken(token);
  }

  /** Logs the token out and measures how soon every ext-authz instance refuses it. */
  logout(token?: string): ReturnType<AuthActions['logout']> {
    return this.#auth.logout(token);
  }

  characters(): ReturnType<CatalogActions['characters']> {
    return this.#catalog.characters();
  }

  upsertCharacter(
    code: string,
    input: Record<string, unknown>,
  ): ReturnType<CatalogActions['upsertCharacter']> {
    return this.#catalog.upsertCharacter(code, input);
  }

  deleteCharacter(code: string): ReturnType<CatalogActions['deleteCharacter']> {
    return this.#catalog.deleteCharacter(code);
  }

  match(...args: Parameters<MatchActions['match']>): ReturnType<MatchActions['match']> {
    return this.#match.match(...args);
  }

  /** Cuts `id`'s broker connections for `ms` (by default STACK_DISCONNECT_MS). */
  disconnect(id: string, ms?: number): ReturnType<FaultActions['disconnect']> {
    return this.#faults.disconnect(id, ms);
  }

  kill(id: string): ReturnType<FaultActions['kill']> {
    return this.#faults.kill(id);
  }
}
