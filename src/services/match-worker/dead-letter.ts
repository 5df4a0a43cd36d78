import { bodyBytes } from '../../amqp/body.ts';
import type { Connection } from '../../amqp/connection.ts';
import type { AsyncMessage } from '../../amqp/raw-consumer.ts';
import { WorkQueuePublisher } from '../../amqp/work-queue.ts';
import type { TaskError } from '../../celery/protocol.ts';
import type { QueueType } from '../../amqp/queue-type.ts';
import { MATCH_QUEUE, durableQueue } from '../../celery/queue.ts';
import type { CeleryResultBackend } from '../../celery/result-backend.ts';
import { failureMeta } from '../../celery/result-backend.ts';
import type { Clock } from '../../clock.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';

/** Where messages that cannot be run go, with `x-dlq-reason`. */
export const MATCH_DLQ = `${MATCH_QUEUE}.dlq`;

export interface DeadLettersOptions {
  connection: Connection;
  /** How the DLQ is declared (MATCH_QUEUE_TYPE). @default 'classic' */
  queueType?: QueueType;
  backend: CeleryResultBackend;
  publishTimeoutMs: number;
  clock: Clock;
  logger: Logger;
}

/**
 * The match worker's dead-lettering: a message that cannot run goes to
 * `character.match.dlq` with its body and properties (the caller then acks
 * it). A task whose arguments are wrong also gets a FAILURE result (as a
 * Celery worker stores the TypeError of a bad call), so its caller's get()
 * raises instead of waiting for its timeout.
 */
export class DeadLetters {
  readonly #o: DeadLettersOptions;
  readonly #publisher: WorkQueuePublisher;

  constructor(options: DeadLettersOptions) {
    this.#o = options;
    this.#publisher = new WorkQueuePublisher(options.connection, {
      declare: { queues: [durableQueue(MATCH_DLQ, options.queueType)] },
      publishTimeoutMs: options.publishTimeoutMs,
    });
  }

  async reject(msg: AsyncMessage, error: TaskError): Promise<void> {
    if (error.code === 'TASK_BAD_SHAPE' && error.taskId !== undefined) {
      const now = this.#o.clock.now();
      await this.#o.backend.store(
        failureMeta(
          error.taskId,
          { exc_type: 'ValueError', exc_message: [error.message], exc_module: 'builtins' },
          `cachecast match-worker refused the task: ${error.code}: ${error.message}`,
          now,
        ),
      );
    }
    const dlqHeaders: Record<string, unknown> = {
      'x-dlq-reason': `${error.code}: ${error.message}`,
      'x-dlq-original-queue': MATCH_QUEUE,
      'x-dlq-original-exchange': msg.exchange,
      'x-dlq-original-routing-key': msg.routingKey,
      'x-dlq-redelivered': msg.redelivered,
    };
    // Not carried over: `expiration` (it would expire in the DLQ) and
    // `userId` (the broker checks it against this connection's user).
    const properties = {
      contentType: msg.contentType,
      contentEncoding: msg.contentEncoding,
      correlationId: msg.correlationId,
      replyTo: msg.replyTo,
      messageId: msg.messageId,
      priority: msg.priority,
      timestamp: msg.timestamp,
      type: msg.type,
      appId: msg.appId,
    };
    const bytes = bodyBytes(msg.body);
    const target = { routingKey: MATCH_DLQ };
    try {
      await this.#publisher.send(target, bytes, {
        ...properties,
        headers: { ...(msg.headers ?? {}), ...dlqHeaders },
      });
    } catch (err) {
      // Original headers the broker or the codec refuses (too large, odd
      // types) must not keep the message cycling: retry with ours alone.
      if (!this.#o.connection.ready) throw err;
      await this.#publisher.send(target, bytes, {
        ...properties,
        headers: { ...dlqHeaders, 'x-dlq-original-headers-dropped': describeError(err).slice(0, 500) },
      });
    }
    this.#o.logger.warn(
      { code: error.code, err: error.message, taskId: error.taskId, task: error.taskName },
      'task dead-lettered',
    );
  }

  close(): Promise<void> {
    return this.#publisher.close();
  }
}
