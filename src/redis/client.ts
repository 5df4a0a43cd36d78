import { createClient } from 'redis';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** The node-redis client every Redis user in cachecast holds. */
export type RedisClient = ReturnType<typeof createClient>;

export interface ManagedRedis {
  client: RedisClient;
  /** Settles when the first connection is made (it retries until then). */
  connected: Promise<void>;
  /** Idempotent: QUIT when connected, otherwise drop the socket. */
  close(): Promise<void>;
}

/**
 * A Redis client that fails fast: no offline queue, so while Redis is away a
 * command fails at once instead of piling up in memory and answering late.
 * It reconnects by itself with capped backoff.
 */
export function connectRedis(url: string, logger: Logger, name: string): ManagedRedis {
  const client: RedisClient = createClient({
    url,
    name,
    disableOfflineQueue: true,
    socket: { connectTimeout: 2000, reconnectStrategy: (retries) => Math.min(50 * 2 ** retries, 2000) },
  });
  client.on('error', (err: unknown) => logger.warn({ err: describeError(err) }, 'redis connection error'));
  const connected = client.connect().then(() => undefined);
  connected.catch(() => undefined);
  let closing: Promise<void> | undefined;
  return {
    client,
    connected,
    close() {
      closing ??= (async () => {
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
            const timer = setTimeout(done, 2500);
            client.once('connect', done).once('error', done);
          });
        }
        if (client.isReady) await client.close();
        else if (client.isOpen) client.destroy();
      })();
      return closing;
    },
  };
}
