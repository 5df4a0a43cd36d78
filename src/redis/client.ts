import { createClient, createSentinel } from 'redis';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { RedisNode, RedisTarget } from './target.ts';
import { DEFAULT_SENTINEL_NAME, toRedisTarget, urlCredentials } from './target.ts';

/** A client of one Redis server. */
export type RedisNodeClient = ReturnType<typeof createClient>;
/** The master of a Sentinel-watched group, followed across failovers by node-redis. */
export type RedisSentinelClient = ReturnType<typeof createSentinel>;
/**
 * The client every Redis user in cachecast holds: either kind. Only what both
 * have may be used (no scanIterator or duplicate: see scanKeys).
 */
export type RedisClient = RedisNodeClient | RedisSentinelClient;

export interface ManagedRedis {
  client: RedisClient;
  /** Settles when the first connection is made (it retries until then). */
  connected: Promise<void>;
  /** Idempotent: QUIT when connected, otherwise drop the socket. */
  close(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 2000;
const reconnectStrategy = (retries: number): number => Math.min(50 * 2 ** retries, 2000);

/**
 * A Redis client that fails fast: no offline queue, so while Redis is away a
 * command fails at once instead of piling up in memory and answering late.
 * It reconnects by itself with capped backoff.
 *
 * With `sentinels` in the target, it is node-redis's Sentinel client: it asks
 * the Sentinels for the master, follows each failover they announce, and holds
 * commands (instead of failing them) while it reconnects to the new master.
 * One master connection (masterPoolSize 1), so a WAIT after a write waits for
 * that write.
 */
export function connectRedis(target: string | RedisTarget, logger: Logger, name: string): ManagedRedis {
  const t = toRedisTarget(target);
  if (t.sentinels && t.sentinels.length > 0) return connectSentinel(t, t.sentinels, logger, name);
  const client: RedisNodeClient = createClient({
    url: t.url,
    name,
    disableOfflineQueue: true,
    socket: { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy },
  });
  client.on('error', (err: unknown) => logger.warn({ err: describeError(err) }, 'redis connection error'));
  return managed(client, client.connect(), async () => {
    if (!client.isReady && client.isOpen) {
      // A (re)connect may be under way: node-redis attaches its socket to the client
      // only once it has connected, so a destroy() now would miss it, and the socket
      // would connect and stay open, keeping the closed service's process alive.
      // Wait for the attempt to end (connectTimeout bounds it), then close.
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          client.off('connect', done).off('error', done);
          resolve();
        };
        const timer = setTimeout(done, CONNECT_TIMEOUT_MS + 500);
        client.once('connect', done).once('error', done);
      });
    }
    if (client.isReady) await client.close();
    else if (client.isOpen) client.destroy();
  });
}

function connectSentinel(
  t: RedisTarget,
  sentinels: readonly RedisNode[],
  logger: Logger,
  name: string,
): ManagedRedis {
  const { database, username, password, tls } = urlCredentials(t.url);
  const socket = tls
    ? { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy, tls: true as const }
    : { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy };
  const client: RedisSentinelClient = createSentinel({
    name: t.sentinelName ?? DEFAULT_SENTINEL_NAME,
    sentinelRootNodes: sentinels.map((n) => ({ host: n.host, port: n.port })),
    nodeClientOptions: { name, database, username, password, socket },
    sentinelClientOptions: { name: `${name}-sentinel`, socket },
    masterPoolSize: 1,
    passthroughClientErrorEvents: true,
  });
  client.on('error', (err: unknown) => logger.warn({ err: describeError(err) }, 'redis connection error'));
  client.on('topology-change', (event: { type?: string; node?: RedisNode }) => {
    if (event.type === 'MASTER_CHANGE' && event.node) {
      logger.info({ master: `${event.node.host}:${event.node.port}` }, 'redis master (from Sentinel)');
    }
  });
  return managed(client, client.connect(), async () => {
    // Not waiting for the first connection: with every Sentinel unreachable it would
    // take node-redis 16 rediscovery rounds (about as many seconds) to give up.
    // destroy() ends that loop at its next round.
    if (client.isReady) await client.close().catch(() => client.destroy());
    else await client.destroy().catch(() => undefined);
  });
}

/**
 * A client of one server that never reconnects by itself (no reconnect
 * strategy, no offline queue): for callers that open a new connection after
 * each fault. `master`: the server the Sentinels named, reached with the URL's
 * database, user, password and TLS; without it, the URL's own server.
 */
export function createNodeClient(
  url: string,
  master: RedisNode | undefined,
  options: {
    name?: string | undefined;
    connectTimeoutMs: number;
    /** No CLIENT SETINFO in the handshake (one command less per connection). @default false */
    disableClientInfo?: boolean;
  },
): RedisNodeClient {
  const base = {
    name: options.name,
    disableOfflineQueue: true,
    disableClientInfo: options.disableClientInfo ?? false,
  };
  const socket = { connectTimeout: options.connectTimeoutMs, reconnectStrategy: false as const };
  if (!master) return createClient({ ...base, url, socket });
  const { database, username, password, tls } = urlCredentials(url);
  const at = { ...socket, host: master.host, port: master.port };
  return createClient({
    ...base,
    database,
    username,
    password,
    socket: tls ? { ...at, tls: true } : at,
  });
}

/** `connected` settles with the first connection (never unhandled); close() runs once. */
function managed(
  client: RedisClient,
  connecting: Promise<unknown>,
  close: () => Promise<void>,
): ManagedRedis {
  const connected = connecting.then(() => undefined);
  connected.catch(() => undefined);
  let closing: Promise<void> | undefined;
  return { client, connected, close: () => (closing ??= close()) };
}

/** Every key matching `match`, a SCAN step at a time, on either kind of client. */
export async function* scanKeys(client: RedisClient, match: string, count = 1000): AsyncGenerator<string[]> {
  let cursor = '0';
  do {
    const step = await client.scan(cursor, { MATCH: match, COUNT: count });
    cursor = String(step.cursor);
    if (step.keys.length > 0) yield step.keys;
  } while (cursor !== '0');
}

/**
 * WAIT: how many replicas acknowledged every write this connection made
 * before it. On a Sentinel client the one master connection is the writer's
 * (node-redis marks WAIT read-only, so a replica pool would take it: keep
 * replicaPoolSize at 0).
 */
export async function waitForReplicas(
  client: RedisClient,
  replicas: number,
  timeoutMs: number,
): Promise<number> {
  return Number(await client.wait(replicas, timeoutMs));
}
