import type pg from 'pg';
import { RabbitMQBus } from '../amqp/rabbitmq-bus.ts';
import { describeError } from '../errors.ts';
import { OutboxRelay } from '../outbox/relay.ts';

/**
 * A one-shot relay for CLI commands: publishes what the command just
 * committed, so the change reaches replicas now even with no service running.
 * When the broker is unreachable the events stay in the outbox, and any
 * running catalog service's relay publishes them later: nothing is lost.
 */
export async function publishOutboxNow(
  pool: pg.Pool,
  rabbitmqUrl: string,
  eventSecret: string | undefined,
  timeoutMs = 10_000,
): Promise<{ published: boolean; detail: string }> {
  const bus = new RabbitMQBus({ url: rabbitmqUrl, publishTimeoutMs: Math.min(timeoutMs, 5000) });
  const relay = new OutboxRelay({ pool, bus, eventSecret });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        const result = await relay.drainOnce();
        if (result === 'done') return { published: true, detail: 'published' };
        if (result === 'busy') return { published: true, detail: 'a running relay is publishing it' };
      } catch (err) {
        if (Date.now() > deadline) return { published: false, detail: describeError(err) };
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  } finally {
    await relay.close();
    await bus.close();
  }
}
