import { describeError } from '../../errors.ts';
import type { CeleryClient } from '../celery-client.ts';
import type { StackProcessSpec } from '../config.ts';
import { ActionError } from './action-error.ts';
import type { Targets } from './targets.ts';
import { round, sleep } from './targets.ts';

/** A match task sent over AMQP as a Celery client would, and which worker ran it. */
export class MatchActions {
  readonly #t: Targets;
  readonly #celery: CeleryClient;

  constructor(targets: Targets, celery: CeleryClient) {
    this.#t = targets;
    this.#celery = celery;
  }

  async match(
    classification: { major_category?: string; middle_category?: string; minor_category?: string },
    userId: string | undefined,
  ): Promise<{
    task_id: string;
    status: string;
    result: unknown;
    published_ms: number;
    total_ms: number;
    worker: string | null;
  }> {
    const workers = this.#t.processes('match-worker');
    const before = await Promise.all(workers.map((w) => this.#taskCount(w)));
    let call;
    try {
      call = await this.#celery.match(classification, userId ? { userId } : {});
    } catch (err) {
      throw new ActionError(504, 'match_failed', describeError(err));
    }
    // The worker counts a task once it is acked: after the result is stored and, for a task
    // with a user, after the broker confirmed its grant (a disk write), so allow for a slow one.
    let worker: string | null = null;
    const deadline = Date.now() + 5000;
    while (worker === null && Date.now() < deadline) {
      const after = await Promise.all(workers.map((w) => this.#taskCount(w)));
      // A count that went down is a restarted worker's: it counts from 0 again.
      const i = after.findIndex((n, k) => {
        const was = before[k];
        return n !== null && was !== null && was !== undefined && n > (n < was ? 0 : was);
      });
      if (i >= 0) worker = workers[i]!.id;
      else await sleep(10);
    }
    const result = call.meta.result as { code?: unknown; name?: unknown } | null;
    this.#t.report(
      'info',
      `match ${JSON.stringify(classification.middle_category ?? null)} -> ${call.meta.status} ${
        result && typeof result === 'object' ? `${String(result.code)} "${String(result.name)}"` : 'null'
      } in ${round(call.totalMs)} ms${worker ? ` (by ${worker})` : ''}`,
    );
    return {
      task_id: call.taskId,
      status: call.meta.status,
      result: call.meta.result,
      published_ms: round(call.publishedMs),
      total_ms: round(call.totalMs),
      worker,
    };
  }

  async #taskCount(p: StackProcessSpec): Promise<number | null> {
    try {
      const res = await fetch(this.#t.url(p, '/worker', true), {
        signal: AbortSignal.timeout(1000),
        headers: { authorization: `Bearer ${this.#t.config.adminPortToken}` },
      });
      const stats = (await res.json()) as Record<string, unknown>;
      let n = 0;
      for (const key of ['success', 'no_match', 'expired', 'dead_lettered', 'failed']) {
        if (typeof stats[key] === 'number') n += stats[key];
      }
      return n;
    } catch {
      return null;
    }
  }
}
