import type { FastifyInstance } from 'fastify';
import type { Server } from 'node:http';

/** How long close() lets requests in flight finish before it drops their connections. */
export const DRAIN_GRACE_MS = 5000;

/**
 * Makes a fastify app's close() drain and end. Node's `server.close()` closes
 * the keep-alive connections idle at that moment, but one busy then stays open
 * after its answer until the client lets it go (fastify's keep-alive timeout
 * is 72 s): a SIGTERM right after traffic hung there. So once closing, every
 * answer says `connection: close`, and after `graceMs` what is left is dropped.
 */
export function drainOnClose(app: FastifyInstance, graceMs = DRAIN_GRACE_MS): void {
  let draining = false;
  let force: NodeJS.Timeout | undefined;
  app.addHook('preClose', (done) => {
    draining = true;
    force = forceCloseAfter(app.server, graceMs);
    done();
  });
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (draining) void reply.header('connection', 'close');
    done(null, payload);
  });
  app.addHook('onClose', (_app, done) => {
    clearTimeout(force);
    done();
  });
}

/** Drops every connection of `server` still open after `graceMs` (the timer does not hold the process). */
export function forceCloseAfter(server: Server, graceMs: number): NodeJS.Timeout {
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  timer.unref();
  return timer;
}
