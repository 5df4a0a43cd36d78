import { createServer, connect } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

/**
 * A TCP proxy between the code under test and a real server, for faults:
 * `cut()` destroys every connection (and refuses new ones until `restore()`),
 * `stall()` keeps connections open but stops moving bytes (what a dead network
 * path looks like), `restore()` goes back to normal.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #pairs = new Set<[Socket, Socket]>();
  #mode: 'open' | 'refusing' | 'stalled' = 'open';
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {
    this.#server = createServer((client) => this.#accept(client));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  get connections(): number {
    return this.#pairs.size;
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

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
