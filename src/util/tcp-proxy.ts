import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

export type TcpProxyMode = 'open' | 'refusing' | 'stalled';

/**
 * A TCP proxy in front of a real server, for faults: `cut()` destroys every
 * connection (and refuses new ones until `restore()`), `stall()` keeps
 * connections open but stops moving bytes (what a dead network path looks
 * like), `restore()` goes back to normal. The fault tests put one between the
 * code under test and RabbitMQ/Redis/PostgreSQL; `cachecast stack` puts one
 * between each child process and the broker, so that the dashboard can
 * disconnect a process for real.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #mode: TcpProxyMode = 'open';
  #closing: Promise<void> | undefined;
  #host = '127.0.0.1';
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.#server = createServer((client) => this.#accept(client));
  }

  /** A proxy to the host and port of a service URL (`defaultPort` when the URL names none). */
  static to(url: string, defaultPort: number): TcpProxy {
    const target = new URL(url);
    return new TcpProxy(target.hostname, Number(target.port || defaultPort));
  }

  /** `url` with its host and port replaced by this proxy's: the same service, reached through it. */
  urlThrough(url: string): string {
    const through = new URL(url);
    through.hostname = this.#host;
    through.port = String(this.port);
    return through.toString();
  }

  /** Listens (by default on a free port of 127.0.0.1); `port` is then the bound one. */
  async start(port = 0, host = '127.0.0.1'): Promise<this> {
    this.#host = host;
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  get connections(): number {
    return this.#pairs.size;
  }

  get mode(): TcpProxyMode {
    return this.#mode;
  }

  #accept(client: Socket): void {
    if (this.#mode === 'refusing') {
      client.destroy();
      return;
    }
    const upstream = connect(this.targetPort, this.targetHost);
    const pair: [Socket, Socket] = [client, upstream];
    this.#pairs.add(pair);
    const forward = (from: Socket, to: Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (this.#mode === 'stalled') return; // dropped on the floor, like a black hole
        to.write(chunk);
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    const close = (): void => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', close);
    upstream.on('close', close);
    client.on('error', close);
    upstream.on('error', close);
  }

  /** Destroys all connections and refuses new ones until restore(). */
  cut(): void {
    this.#mode = 'refusing';
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
  }

  /** Keeps connections open but silently drops every byte. */
  stall(): void {
    this.#mode = 'stalled';
  }

  /** Stalled connections stay broken (bytes were lost); new ones work. */
  restore(): void {
    if (this.#mode === 'stalled') {
      for (const [a, b] of this.#pairs) {
        a.destroy();
        b.destroy();
      }
      this.#pairs.clear();
    }
    this.#mode = 'open';
  }

  /** Cuts every connection and stops listening. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.cut();
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
    });
    return this.#closing;
  }
}
