import type { RedisClient } from './client.ts';
import { waitForReplicas } from './client.ts';

/**
 * Shared WAITs. A WAIT answers for the writes its connection sent before it,
 * and blocks that connection while it waits, so one WAIT per write would
 * queue writers behind each other's timeouts (a lost replica: every logout a
 * full timeout after the one before). Instead a caller whose write has been
 * answered joins the next WAIT to be sent: at most one waits on the wire and
 * one gathers callers, so a caller waits at most two WAITs.
 */
export class ReplicaAcks {
  #sending: Promise<number> | undefined;
  #next: Promise<number> | undefined;

  constructor(
    private readonly client: RedisClient,
    private readonly replicas: number,
    private readonly timeoutMs: number,
  ) {}

  /** How many replicas have every write this connection made before the call. */
  acked(): Promise<number> {
    this.#next ??= (async () => {
      // The WAIT on the wire was sent before our write's reply came back: it may not cover it.
      await this.#sending?.catch(() => undefined);
      const sending = waitForReplicas(this.client, this.replicas, this.timeoutMs);
      this.#sending = sending;
      this.#next = undefined;
      try {
        return await sending;
      } finally {
        if (this.#sending === sending) this.#sending = undefined;
      }
    })();
    return this.#next;
  }
}
