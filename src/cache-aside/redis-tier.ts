import { CachecastError, describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { redactUrl } from '../util/redact.ts';
import type { RedisNodeClient } from '../redis/client.ts';
import { createNodeClient } from '../redis/client.ts';
import { askSentinelsForMaster } from '../redis/sentinel-master.ts';
import type { RedisNode } from '../redis/target.ts';
import { DEFAULT_SENTINEL_NAME } from '../redis/target.ts';
import { classifyRedisError } from './redis-errors.ts';

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export interface RedisTierOptions {
  url: string;
  /**
   * Sentinels watching the master to use (the URL then gives only database,
   * user, password and TLS): every new connection asks them for the master.
   */
  sentinels?: readonly RedisNode[] | undefined;
  /** @default 'mymaster' */
  sentinelName?: string | undefined;
  /**
   * The most any operation may take, connecting included; past it the call
   * fails with CACHE_TIMEOUT and the connection is replaced (the other calls
   * on it fail with CACHE_CONNECTION_DROPPED).
   */
  commandTimeoutMs: number;
  logger?: Logger;
  /** CLIENT SETNAME. @default 'cachecast-cache-aside' */
  clientName?: string;
}

export interface RedisTierStats {
  connected: boolean;
  /** Connections attempted / failed to become ready. */
  connects: number;
  connect_failures: number;
  /** Operations that missed their deadline. */
  timeouts: number;
  /** Operations that failed because the connection they used was dropped for another's deadline. */
  dropped: number;
}

/**
 * The Redis side of cache-aside, built to fail fast: node-redis with the
 * offline queue disabled and no reconnect loop of its own, every operation
 * (connecting included) under one deadline.
 *
 * - It connects only when an operation needs a connection, so while the
 *   circuit breaker is open (no operations) it makes no connection attempts
 *   either; a refused connection costs a round trip, not a backoff.
 * - node-redis's own command timeout stops only commands not yet written; a
 *   written command to a stalled server would wait for the socket to die
 *   (minutes). So every operation races a timer, and a miss replaces the
 *   connection (the commands behind it would stall too). Only the operation
 *   whose deadline fired fails with CACHE_TIMEOUT; the others that were on
 *   that connection, or waiting for it to connect, fail with
 *   CACHE_CONNECTION_DROPPED, so that the caller can tell "this call was too
 *   slow" from "this call was cut short for another's sake".
 */
export class RedisTier {
  readonly #o: Required<Omit<RedisTierOptions, 'logger' | 'sentinels'>> & {
    logger: Logger;
    sentinels: readonly RedisNode[] | undefined;
  };
  #client: RedisNodeClient | undefined;
  #connecting: Promise<RedisNodeClient> | undefined;
  /** The client whose connection is in progress, if any (to discard it on a deadline). */
  #pendingClient: RedisNodeClient | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Clients dropped because an operation on them (or waiting for them) missed its deadline. */
  readonly #droppedForDeadline = new WeakSet<RedisNodeClient>();
  /** Clients whose connect() has not settled yet: true once their socket has connected. */
  readonly #connectingClients = new Map<RedisNodeClient, boolean>();
  /** Clients dropped before their socket connected: destroyed once it has. */
  readonly #abandoned = new WeakSet<RedisNodeClient>();
  readonly #stats = { connects: 0, connect_failures: 0, timeouts: 0, dropped: 0 };

  constructor(options: RedisTierOptions) {
    this.#o = {
      clientName: 'cachecast-cache-aside',
      ...options,
      sentinels: options.sentinels?.length ? options.sentinels : undefined,
      sentinelName: options.sentinelName ?? DEFAULT_SENTINEL_NAME,
      logger: (options.logger ?? silentLogger).child({ component: 'cache-redis' }),
    };
  }

  stats(): RedisTierStats {
    return { connected: this.#client?.isReady ?? false, ...this.#stats };
  }

  /** The stored text, or null when the key does not exist. */
  get(key: string): Promise<string | null> {
    return this.#run((c) => c.get(key));
  }

  /** SET with a TTL in milliseconds. */
  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.#run((c) => c.set(key, value, { expiration: { type: 'PX', value: ttlMs } }));
  }

  /** DEL; resolves with the number of keys that existed. */
  del(keys: readonly string[]): Promise<number> {
    if (keys.length === 0) return Promise.resolve(0);
    return this.#run((c) => c.del([...keys]));
  }

  #run<T>(op: (client: RedisNodeClient) => Promise<T>): Promise<T> {
    if (this.#closed)
      return Promise.reject(new CachecastError('CACHE_CONNECT_FAILED', 'the cache is closed'));
    return new Promise<T>((resolve, reject) => {
      /** The connection this operation is on, or waiting for. */
      let on: RedisNodeClient | undefined;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.#stats.timeouts++;
        reject(
          new CachecastError('CACHE_TIMEOUT', `Redis did not answer within ${this.#o.commandTimeoutMs} ms`),
        );
        // A connection that let a command stall is not reused: the ones queued behind it would stall too.
        this.#discard(on ?? this.#pendingClient, true);
      }, this.#o.commandTimeoutMs);
      const ready = this.#client?.isReady ? this.#client : undefined;
      let work: Promise<T>;
      if (ready) {
        on = ready;
        try {
          work = op(ready); // the common case, without the extra promise hops of connecting
        } catch (err) {
          work = Promise.reject(asError(err));
        }
      } else {
        work = this.#ready().then((client) => {
          on = client;
          return op(client);
        });
        on = this.#pendingClient; // the client #ready() is connecting
      }
      work.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (timedOut) return;
          if (on && this.#droppedForDeadline.has(on) && classifyRedisError(err) === 'connection') {
            // Cut short with the connection another operation's deadline dropped: not this one's failure.
            this.#stats.dropped++;
            reject(
              new CachecastError(
                'CACHE_CONNECTION_DROPPED',
                'the connection was dropped after another operation missed its deadline',
                { cause: err },
              ),
            );
            return;
          }
          // A master that a failover demoted answers writes with READONLY: the next
          // connection asks the Sentinels again and goes to the new one.
          if (on && err instanceof Error && err.message.startsWith('READONLY')) this.#discard(on);
          reject(asError(err));
        },
      );
    });
  }

  #ready(): Promise<RedisNodeClient> {
    const client = this.#client;
    if (client?.isReady) return Promise.resolve(client);
    if (this.#connecting) return this.#connecting;
    if (client) this.#discard(client); // closed by a socket error: start over
    const { sentinels } = this.#o;
    if (!sentinels) return this.#open(undefined);
    // The Sentinels name the master first: after a failover, the new one.
    const asking: Promise<RedisNodeClient> = askSentinelsForMaster(
      sentinels,
      this.#o.sentinelName,
      this.#o.commandTimeoutMs,
    ).then(
      (master) => {
        if (this.#closed) throw new CachecastError('CACHE_CONNECT_FAILED', 'the cache is closed');
        return this.#open(master);
      },
      (err: unknown) => {
        if (this.#connecting === asking) this.#connecting = undefined;
        this.#stats.connect_failures++;
        throw new CachecastError('CACHE_CONNECT_FAILED', describeError(err), { cause: err });
      },
    );
    this.#connecting = asking;
    return asking;
  }

  /** A new connection to `master`, or to the URL's server without Sentinels. */
  #open(master: RedisNode | undefined): Promise<RedisNodeClient> {
    const fresh = createNodeClient(this.#o.url, master, {
      name: this.#o.clientName,
      connectTimeoutMs: this.#o.commandTimeoutMs,
      disableClientInfo: true,
    });
    fresh.on('error', (err: unknown) =>
      this.#o.logger.debug({ err: describeError(err) }, 'redis connection error'),
    );
    fresh.once('connect', () => {
      if (!this.#connectingClients.has(fresh)) return;
      this.#connectingClients.set(fresh, true);
      // Once its handshake is under way, so that destroy() fails the connect instead of stranding it.
      if (this.#abandoned.has(fresh)) setImmediate(() => this.#discard(fresh));
    });
    this.#stats.connects++;
    this.#pendingClient = fresh;
    this.#connectingClients.set(fresh, false);
    const connecting = fresh.connect().then(
      () => {
        this.#connectingClients.delete(fresh);
        if (this.#connecting === connecting) this.#connecting = undefined;
        if (this.#pendingClient === fresh) this.#pendingClient = undefined;
        if (this.#closed || this.#abandoned.has(fresh)) {
          this.#discard(fresh);
          throw new CachecastError(
            'CACHE_CONNECT_FAILED',
            this.#closed ? 'the cache is closed' : 'the connection was dropped while it connected',
          );
        }
        this.#client = fresh;
        return fresh;
      },
      (err: unknown) => {
        this.#connectingClients.delete(fresh);
        if (this.#connecting === connecting) this.#connecting = undefined;
        if (this.#pendingClient === fresh) this.#pendingClient = undefined;
        this.#stats.connect_failures++;
        this.#discard(fresh);
        throw new CachecastError(
          'CACHE_CONNECT_FAILED',
          `cannot connect to ${redactUrl(this.#o.url)}: ${describeError(err)}`,
          { cause: err },
        );
      },
    );
    this.#connecting = connecting;
    return connecting;
  }

  /**
   * Drops a client (its pending commands fail at once); the next operation
   * connects afresh. `forDeadline`: because an operation missed its deadline
   * (the others then fail with CACHE_CONNECTION_DROPPED).
   */
  #discard(client: RedisNodeClient | undefined, forDeadline = false): void {
    if (!client) return;
    if (forDeadline) this.#droppedForDeadline.add(client);
    if (this.#client === client) this.#client = undefined;
    if (this.#pendingClient === client) {
      this.#pendingClient = undefined;
      this.#connecting = undefined;
    }
    if (this.#connectingClients.get(client) === false) {
      // node-redis's destroy() misses a socket that has not connected yet (it
      // is attached to the client only then): that socket would connect and
      // stay open for good, holding the process after close(). Destroyed as
      // soon as it connects instead (the connect timeout ends it otherwise).
      this.#abandoned.add(client);
      return;
    }
    try {
      if (client.isOpen) client.destroy();
    } catch {
      // Already torn down.
    }
  }

  /** Idempotent: lets in-flight commands finish (bounded by their deadline), then disconnects. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      const client = this.#client;
      this.#discard(this.#pendingClient);
      if (client?.isReady) {
        const deadline = new Promise<void>((resolve) =>
          setTimeout(resolve, this.#o.commandTimeoutMs).unref(),
        );
        await Promise.race([client.close().catch(() => undefined), deadline]);
      }
      this.#discard(client);
    })();
    return this.#closing;
  }
}
