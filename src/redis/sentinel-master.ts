import { createClient } from 'redis';
import { describeError } from '../errors.ts';
import type { RedisNode } from './target.ts';

/**
 * The master the Sentinels name now (SENTINEL get-master-addr-by-name), asking
 * each in turn until one answers. For clients that open a connection per need
 * (cache-aside's, which fails fast and reconnects after every fault): each new
 * connection asks again, so the one after a failover goes to the new master.
 * Long-lived clients use node-redis's Sentinel client instead (connectRedis).
 */
export async function askSentinelsForMaster(
  sentinels: readonly RedisNode[],
  name: string,
  timeoutMs: number,
): Promise<RedisNode> {
  const failures: string[] = [];
  for (const sentinel of sentinels) {
    const client = createClient({
      disableOfflineQueue: true,
      disableClientInfo: true,
      socket: {
        host: sentinel.host,
        port: sentinel.port,
        connectTimeout: timeoutMs,
        reconnectStrategy: false,
      },
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const reply = await client.sendCommand(['SENTINEL', 'get-master-addr-by-name', name]);
      if (Array.isArray(reply) && reply.length === 2)
        return { host: String(reply[0]), port: Number(reply[1]) };
      failures.push(`${sentinel.host}:${sentinel.port} knows no master named ${name}`);
    } catch (err) {
      failures.push(`${sentinel.host}:${sentinel.port}: ${describeError(err)}`);
    } finally {
      if (client.isOpen) client.destroy();
    }
  }
  throw new Error(`no Sentinel named the master: ${failures.join('; ')}`);
}
