import type { Connection } from '../../amqp/connection.ts';
import { WorkQueuePublisher } from '../../amqp/work-queue.ts';
import type { GrantMessage } from '../../catalog/grant.ts';
import { GRANTS_QUEUE } from '../../catalog/grant.ts';
import type { QueueType } from '../../amqp/queue-type.ts';
import { durableQueue } from '../../celery/queue.ts';
import type { Character } from '../../datasets/catalog.ts';

/**
 * The grants the match worker publishes to `character.grants` (the catalog's
 * grants writer persists them): persistent, confirmed, and with the task id as
 * message id, so a redelivered task republishes the same grant.
 */
export class GrantPublisher {
  readonly #publisher: WorkQueuePublisher;

  constructor(connection: Connection, publishTimeoutMs: number, queueType: QueueType = 'classic') {
    this.#publisher = new WorkQueuePublisher(connection, {
      declare: { queues: [durableQueue(GRANTS_QUEUE, queueType)] },
      publishTimeoutMs,
    });
  }

  /** Resolves once the broker confirmed the grant of `match` to `userId` for task `taskId`. */
  publish(taskId: string, userId: string, match: Character, nowMs: number): Promise<void> {
    const grant: GrantMessage = {
      user_id: userId,
      character_id: match.id,
      character_code: match.code,
      task_id: taskId,
      granted_at: new Date(nowMs).toISOString(),
    };
    return this.#publisher.send({ routingKey: GRANTS_QUEUE }, Buffer.from(JSON.stringify(grant)), {
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      messageId: taskId,
    });
  }

  close(): Promise<void> {
    return this.#publisher.close();
  }
}
