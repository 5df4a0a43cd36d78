import { Connection } from 'rabbitmq-client';
import { RabbitMQBus } from '../../src/amqp/rabbitmq-bus.ts';
import type { RabbitMQBusOptions } from '../../src/amqp/rabbitmq-bus.ts';
import { RABBITMQ_URL } from './env.ts';
import { TcpProxy } from './tcp-proxy.ts';
import { waitFor } from './wait.ts';

/** A RabbitMQ URL that goes through `proxy`. */
export function urlThrough(proxy: TcpProxy): string {
  return proxy.urlThrough(RABBITMQ_URL);
}

export async function rabbitProxy(): Promise<TcpProxy> {
  return TcpProxy.to(RABBITMQ_URL, 5672).start();
}

/** A bus with fast reconnects, optionally through a proxy; resolves once connected. */
export async function testBus(
  proxy?: TcpProxy,
  options: Partial<RabbitMQBusOptions> = {},
): Promise<RabbitMQBus> {
  const bus = new RabbitMQBus({
    url: proxy ? urlThrough(proxy) : RABBITMQ_URL,
    retryLowMs: 50,
    retryHighMs: 500,
    heartbeatSec: 2,
    ...options,
  });
  await waitFor(() => bus.state === 'up', 'bus connected');
  return bus;
}

export async function deleteExchanges(...names: string[]): Promise<void> {
  const admin = new Connection(RABBITMQ_URL);
  for (const exchange of names) await admin.exchangeDelete({ exchange }).catch(() => undefined);
  await admin.close();
}
