import { INVALID_TOKEN_CHALLENGE as CHALLENGE } from '../../auth/jwt/bearer.ts';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Authorizer } from './authorizer.ts';
import type { AuthzDecision, DenyReason } from './decision.ts';
import { listen } from '../../http/listen.ts';

/** Envoy forwards up to 60 KiB of headers; Node's default (16 KiB) would answer 431. */
export const MAX_HEADER_BYTES = 64 * 1024;

/** The 401 bodies, built once: a deny costs no JSON.stringify. */
const DENY_BODIES = new Map<DenyReason, Buffer>();
function denyBody(reason: DenyReason): Buffer {
  let body = DENY_BODIES.get(reason);
  if (!body) DENY_BODIES.set(reason, (body = Buffer.from(JSON.stringify({ error: reason }))));
  return body;
}

function respond(res: ServerResponse, decision: AuthzDecision, draining: boolean): void {
  // While draining, every answer closes its connection: a proxy's pooled
  // connection is never idle, so without this close() would wait forever.
  if (draining) res.shouldKeepAlive = false;
  if (decision.allow) {
    // Exactly 200: Envoy denies on any other 2xx.
    res.writeHead(200, { 'x-user-id': decision.sub, 'x-auth-jti': decision.jti, 'content-length': 0 });
    res.end();
    return;
  }
  const body = denyBody(decision.reason);
  res.writeHead(401, {
    'www-authenticate': CHALLENGE,
    // nginx's auth_request drops the body; this header carries the code to its error page.
    'x-auth-error': decision.reason,
    'content-type': 'application/json',
    'content-length': body.length,
  });
  res.end(body);
}

/** A request Node's parser refused (oversized headers, control bytes, ...): still a token decision. */
function refuseUnparsable(socket: Socket): void {
  const body = denyBody('invalid_token');
  socket.end(
    'HTTP/1.1 401 Unauthorized\r\n' +
      `www-authenticate: ${CHALLENGE}\r\n` +
      'x-auth-error: invalid_token\r\n' +
      `content-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n` +
      body.toString(),
  );
}

/**
 * Envoy's HTTP ext_authz service and nginx's auth_request target: any method,
 * any path. Plain node:http, not a framework: this is the hot path, and the
 * contract is one header in, one status out.
 */
export class AuthzHttpServer {
  readonly server: Server;
  #draining = false;
  #closing: Promise<void> | undefined;

  constructor(authorizer: Authorizer) {
    this.server = createServer({ maxHeaderSize: MAX_HEADER_BYTES }, (req: IncomingMessage, res) => {
      // Envoy sends no body and nginx is told not to; anything else is drained, unread.
      req.resume();
      const decision = authorizer.check(req.headers.authorization, 'http');
      if (decision instanceof Promise) {
        decision.then(
          (d) => respond(res, d, this.#draining),
          () => respond(res, { allow: false, reason: 'revocation_unavailable' }, this.#draining),
        );
      } else {
        respond(res, decision, this.#draining);
      }
    });
    this.server.keepAliveTimeout = 65_000; // longer than the proxies' idle timeouts, so they close first
    // Any request the parser refuses is answered 401, never 400 or 431: Envoy would count
    // those as errors, and nginx turns every status but 2xx/401/403 into a 500.
    this.server.on('clientError', (_err: NodeJS.ErrnoException, socket: Socket) => {
      if (socket.writable) refuseUnparsable(socket);
      else socket.destroy();
    });
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.server, port, host);
  }

  /**
   * Stops accepting, answers what is in flight (closing each connection after
   * its answer), and after `graceMs` drops whatever connection is left.
   * Idempotent.
   */
  close(graceMs = 5000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#draining = true;
      if (!this.server.listening) return resolve();
      const force = setTimeout(() => this.server.closeAllConnections(), graceMs);
      force.unref();
      this.server.close(() => {
        clearTimeout(force);
        resolve();
      });
      this.server.closeIdleConnections();
    });
    return this.#closing;
  }
}
