/**
 * How a durable queue is declared: 'classic' lives on one node (lost while
 * that node is down); 'quorum' is replicated by Raft on a cluster's nodes and
 * stays available while a majority is up, at the price of every message being
 * written to disk on each of them.
 */
export type QueueType = 'classic' | 'quorum';
export const QUEUE_TYPES: readonly QueueType[] = ['classic', 'quorum'];

/** The queue arguments of a type: none for classic (what a client with no configuration declares). */
export function queueTypeArguments(type: QueueType): { arguments?: Record<string, unknown> } {
  return type === 'quorum' ? { arguments: { 'x-queue-type': 'quorum' } } : {};
}
