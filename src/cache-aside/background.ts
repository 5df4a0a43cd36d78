/**
 * Work done off the response path (write-backs, alerts, deferred deletes),
 * tracked so that `close()` can wait for it, and bounded so that a slow
 * Redis or webhook cannot pile up unbounded memory.
 */
export class BackgroundTasks {
  readonly #running = new Set<Promise<void>>();
  readonly #max: number;
  dropped = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get size(): number {
    return this.#running.size;
  }

  /**
   * Runs `task` in the background unless `max` tasks are already running
   * (then it is dropped and counted). The task must handle its own errors;
   * anything it still throws is passed to `onError`.
   */
  run(task: () => Promise<void>, onError: (err: unknown) => void): boolean {
    if (this.#running.size >= this.#max) {
      this.dropped++;
      return false;
    }
    let promise: Promise<void>;
    try {
      promise = task();
    } catch (err) {
      onError(err);
      return true;
    }
    const tracked = promise.catch(onError).finally(() => this.#running.delete(tracked));
    this.#running.add(tracked);
    return true;
  }

  /** Resolves once every task running now, and every task they start, has ended. */
  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }
}
