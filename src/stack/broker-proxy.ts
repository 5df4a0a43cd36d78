import { parseAmqpUrls } from '../amqp/url.ts';
import { TcpProxy } from '../util/tcp-proxy.ts';

export interface BrokerLinkView {
  /** The proxy's port on 127.0.0.1 (what the child's RABBITMQ_URL names). */
  port: number;
  /** `connected`: bytes flow; `cut`: connections destroyed and new ones refused until `restore_at`. */
  state: 'connected' | 'cut';
  /** Epoch ms when a cut ends. */
  restore_at: number | null;
  /** TCP connections the child holds through the proxy now. */
  connections: number;
}

/**
 * One TCP proxy per child process between it and the broker, so that the
 * dashboard can disconnect one process for real: `disconnect()` destroys its
 * connections and refuses new ones for a while, then lets it reconnect.
 * The proxy outlives the child: a restarted child reconnects through it.
 */
export class BrokerProxies {
  readonly #brokerUrl: URL;
  readonly #target: { host: string; port: number };
  readonly #proxies = new Map<string, TcpProxy>();
  readonly #restoreTimers = new Map<string, { timer: NodeJS.Timeout; at: number }>();
  #closing: Promise<void> | undefined;

  readonly #reserved: ReadonlySet<number>;

  /**
   * `rabbitmqUrl`: RABBITMQ_URL; the first node is proxied. `reserved`: the
   * stack's own ports, which a proxy must not take (with --port-offset they can
   * fall in the range the OS hands out for port 0).
   */
  constructor(rabbitmqUrl: string, reserved: Iterable<number> = []) {
    this.#reserved = new Set(reserved);
    const { url, hosts } = parseAmqpUrls(rabbitmqUrl);
    this.#brokerUrl = new URL(url);
    const [host, port] = splitHostPort(hosts[0]!);
    this.#target = { host, port };
  }

  /** amqps is passed through unproxied (a proxy on 127.0.0.1 would fail the TLS host check). */
  get enabled(): boolean {
    return this.#brokerUrl.protocol === 'amqp:';
  }

  /** Starts the proxy for `id` and returns the RABBITMQ_URL its child uses. */
  async add(id: string): Promise<string> {
    if (!this.enabled) return this.#brokerUrl.toString();
    let proxy = await new TcpProxy(this.#target.host, this.#target.port).start(0, '127.0.0.1');
    for (let attempt = 0; this.#reserved.has(proxy.port); attempt++) {
      // Held while asking again, so the OS cannot hand the same port back.
      const taken = proxy;
      if (attempt >= 20) {
        await taken.close();
        throw new Error(`no free port for ${id}'s broker proxy outside the stack's ports`);
      }
      proxy = await new TcpProxy(this.#target.host, this.#target.port).start(0, '127.0.0.1');
      await taken.close();
    }
    this.#proxies.set(id, proxy);
    return proxy.urlThrough(this.#brokerUrl.toString());
  }

  /** Cuts `id` off the broker for `ms`, then restores it. False when `id` has no proxy. */
  disconnect(id: string, ms: number, onRestore?: () => void): boolean {
    const proxy = this.#proxies.get(id);
    if (!proxy || this.#closing) return false;
    const previous = this.#restoreTimers.get(id);
    if (previous) clearTimeout(previous.timer);
    proxy.cut();
    const timer = setTimeout(() => {
      this.#restoreTimers.delete(id);
      if (this.#closing) return;
      proxy.restore();
      onRestore?.();
    }, ms);
    timer.unref();
    this.#restoreTimers.set(id, { timer, at: Date.now() + ms });
    return true;
  }

  view(id: string): BrokerLinkView | null {
    const proxy = this.#proxies.get(id);
    if (!proxy) return null;
    const cut = this.#restoreTimers.get(id);
    return {
      port: proxy.port,
      state: proxy.mode === 'open' ? 'connected' : 'cut',
      restore_at: cut?.at ?? null,
      connections: proxy.connections,
    };
  }

  /** Closes every proxy (cuts what is left). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const { timer } of this.#restoreTimers.values()) clearTimeout(timer);
      this.#restoreTimers.clear();
      await Promise.all([...this.#proxies.values()].map((p) => p.close()));
    })();
    return this.#closing;
  }
}

function splitHostPort(hostPort: string): [string, number] {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  return [host, Number(hostPort.slice(i + 1))];
}
