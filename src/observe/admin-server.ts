import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

import type { Registry } from 'prom-client';
import type { ReplicatedCache } from '../replica/replicated-cache.ts';
import { bearerMatches } from '../http/bearer.ts';
import { DRAIN_GRACE_MS, forceCloseAfter } from '../http/drain.ts';
import { listen } from '../http/listen.ts';
import { sendJson as send } from '../http/send-json.ts';

export type AdminRoute = () => unknown;

export interface AdminServerOptions {
  replicas: () => Iterable<ReplicatedCache<unknown>>;
  registry: Registry;
  /** Extra readiness conditions beside "every replica has synced" (e.g. the HTTP server listens). */
  ready?: () => boolean;
  /** Extra JSON endpoints anyone reaching the port may read (CONTRACT.md's), e.g. { '/cache': ... }. */
  routes?: Record<string, AdminRoute>;
  /**
   * Detail endpoints (who was allowed or denied, policies, error texts), served
   * only with `Authorization: Bearer <token>`.
   */
  privateRoutes?: Record<string, AdminRoute>;
  /** ADMIN_PORT_TOKEN; while undefined every private route answers 403 `admin_disabled`. */
  token?: string | undefined;
}

/**
 * The admin port every service runs: /healthz, /readyz, /metrics, /replicas.
 * Kept off the public port so that metrics and state never face the internet;
 * and since the port must face kubelets and Prometheus, what probes and
 * scrapers need is open while the detail routes need a token.
 */
export class AdminServer {
  readonly #o: AdminServerOptions;
  readonly #server: Server;
  #closing: Promise<void> | undefined;

  constructor(options: AdminServerOptions) {
    this.#o = options;
    this.#server = createServer((req, res) => {
      // While closing, every answer closes its connection (see drainOnClose).
      if (this.#closing) res.shouldKeepAlive = false;
      this.#handle(req, res).catch(() => {
        if (!res.headersSent) send(res, 500, { error: 'internal' });
      });
    });
    this.#server.keepAliveTimeout = 5000;
  }

  /** Ready = every replica can serve (see ReplicatedCache.canServe) and `ready()` holds. */
  isReady(): boolean {
    for (const replica of this.#o.replicas()) if (!replica.canServe) return false;
    return this.#o.ready?.() ?? true;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method_not_allowed' });
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/healthz':
        return send(res, 200, { status: 'ok' });
      case '/readyz': {
        const ready = this.isReady();
        return send(res, ready ? 200 : 503, {
          status: ready ? 'ready' : 'not_ready',
          replicas: this.#replicaStates(),
        });
      }
      case '/metrics': {
        const text = await this.#o.registry.metrics();
        res.writeHead(200, { 'content-type': this.#o.registry.contentType });
        res.end(text);
        return;
      }
      case '/replicas':
        return send(
          res,
          200,
          [...this.#o.replicas()].map((r) => r.stats()),
        );
      default: {
        const route = path ? own(this.#o.routes, path) : undefined;
        if (route) return send(res, 200, await route());
        const detail = path ? own(this.#o.privateRoutes, path) : undefined;
        if (!detail) return send(res, 404, { error: 'not_found' });
        if (!this.#o.token) {
          return send(res, 403, {
            error: 'admin_disabled',
            message: 'set ADMIN_PORT_TOKEN to enable this endpoint',
          });
        }
        if (!bearerMatches(req.headers.authorization, this.#o.token)) {
          return send(res, 401, { error: 'unauthorized' }, { 'www-authenticate': 'Bearer' });
        }
        return send(res, 200, await detail());
      }
    }
  }

  #replicaStates(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const replica of this.#o.replicas()) out[replica.dataset] = replica.state;
    return out;
  }

  listen(port: number, host = '0.0.0.0'): Promise<number> {
    return listen(this.#server, port, host);
  }

  /** Stops accepting, answers what is in flight, drops what is left after `graceMs`. Idempotent. */
  close(graceMs = DRAIN_GRACE_MS): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) return resolve();
      const force = forceCloseAfter(this.#server, graceMs);
      this.#server.close(() => {
        clearTimeout(force);
        resolve();
      });
      this.#server.closeIdleConnections();
    });
    return this.#closing;
  }
}

function own(routes: Record<string, AdminRoute> | undefined, path: string): AdminRoute | undefined {
  return routes && Object.hasOwn(routes, path) ? routes[path] : undefined;
}
