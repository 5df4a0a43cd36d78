import type { WorkQueuePublisherOptions } from '../amqp/work-queue.ts';

/** The match work queue (CONTRACT.md "Match commands"): the stack's client sends to it, the worker consumes it. */
export const MATCH_QUEUE = 'character.match';

/**
 * Exactly what Celery (kombu) declares for a queue given by name in
 * `send_task(..., queue=name)`: a durable direct exchange and a durable queue
 * of that name, bound by that name. Anything else (arguments, auto-delete)
 * makes Celery's own declaration fail with 406 PRECONDITION_FAILED.
 */
export function celeryQueueDeclaration(
  queue: string,
): Required<NonNullable<WorkQueuePublisherOptions['declare']>> {
  return {
    exchanges: [{ exchange: queue, type: 'direct', durable: true, autoDelete: false }],
    queues: [{ queue, durable: true, exclusive: false, autoDelete: false }],
    queueBindings: [{ exchange: queue, queue, routingKey: queue }],
  };
}
