import type { QueueType } from '../amqp/queue-type.ts';
import { queueTypeArguments } from '../amqp/queue-type.ts';
import type { WorkQueuePublisherOptions } from '../amqp/work-queue.ts';

/** The match work queue (CONTRACT.md "Match commands"): the stack's client sends to it, the worker consumes it. */
export const MATCH_QUEUE = 'character.match';

// MATCH_QUEUE_TYPE ('classic', what Celery declares with no configuration, or 'quorum':
// survives the loss of a cluster node; Celery must then declare it the same way, see
// README "On a RabbitMQ cluster") applies to `character.match`, its DLQ and `character.grants`.
export type { QueueType } from '../amqp/queue-type.ts';
export { QUEUE_TYPES, queueTypeArguments } from '../amqp/queue-type.ts';

/** A durable work queue of `type` (the DLQs, the grants). */
export function durableQueue(queue: string, type: QueueType = 'classic') {
  return { queue, durable: true, ...queueTypeArguments(type) };
}

/**
 * Exactly what Celery (kombu) declares for a queue given by name in
 * `send_task(..., queue=name)`: a durable direct exchange and a durable queue
 * of that name, bound by that name; for a quorum queue, with
 * `x-queue-type: quorum` (Celery 5.5's `task_default_queue_type='quorum'`, or
 * 5.2's `task_queues` with that argument). Anything else (other arguments,
 * auto-delete) makes Celery's own declaration fail with 406 PRECONDITION_FAILED.
 */
export function celeryQueueDeclaration(
  queue: string,
  type: QueueType = 'classic',
): Required<NonNullable<WorkQueuePublisherOptions['declare']>> {
  return {
    exchanges: [{ exchange: queue, type: 'direct', durable: true, autoDelete: false }],
    queues: [{ queue, durable: true, exclusive: false, autoDelete: false, ...queueTypeArguments(type) }],
    queueBindings: [{ exchange: queue, queue, routingKey: queue }],
  };
}
