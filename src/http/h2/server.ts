// An HTTP/2 server over cleartext TCP (h2c with prior knowledge, as gRPC
// clients and Envoy connect), one H2Session per connection.
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { DEFAULT_LIMITS, H2Session } from './session.ts';
import type { H2Limits, ServerStream } from './session.ts';

/** TCP keepalive probes on idle connections, so a vanished peer's connection is found and freed. */
const KEEPALIVE_DELAY_MS = 60_000;

export class H2Server {
  readonly #net: Server;
  readonly #sessions = new Set<H2Session>();
  #closing: Promise<void> | undefined;

  constructor(handler: (stream: ServerStream) => void, limits: Partial<H2Limits> = {}) {
    const resolved: H2Limits = { ...DEFAULT_LIMITS, ...limits };
    this.#net = createServer(
      { noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_DELAY_MS, allowHalfOpen: true },
      (socket) => {
        const session = new H2Session(socket, handler, resolved, (s) => this.#sessions.delete(s));
        this.#sessions.add(session);
        // Accepted as the listener closed: told at once that nothing will be served.
        if (this.#closing) session.shutdown();
      },
    );
  }

  /** Open connections. */
  get connections(): number {
    return this.#sessions.size;
  }

  /** Binds; resolves with the bound port (`0` picks a free one), rejects on EADDRINUSE. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#net.once('error', reject);
      this.#net.listen(port, host, () => {
        this.#net.off('error', reject);
        resolve((this.#net.address() as AddressInfo).port);
      });
    });
  }

  /**
   * Stops accepting, sends every connection a GOAWAY (no new stream), lets
   * the streams in flight finish, and after `graceMs` drops whatever
   * connection is left. Idempotent.
   */
  close(graceMs: number): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      for (const session of this.#sessions) session.shutdown();
      if (!this.#net.listening) {
        for (const session of this.#sessions) session.destroy();
        return resolve();
      }
      // Not unref'd: whoever awaits close() is owed its end, even with nothing else running.
      const force = setTimeout(() => {
        for (const session of this.#sessions) session.destroy();
      }, graceMs);
      // Called once the listener is closed and every connection has ended.
      this.#net.close(() => {
        clearTimeout(force);
        resolve();
      });
    });
    return this.#closing;
  }
}
