import type { Clock } from '../clock.ts';

/**
 * Sleeps on an injected clock that a close() can cut short: retry and grace
 * pauses must never keep a closing component waiting.
 */
export class Pauses {
  readonly #clock: Clock;
  readonly #wakers = new Set<() => void>();
  #stopped = false;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Resolves after `ms`, or at once when stopped. The timer never keeps the process alive. */
  pause(ms: number): Promise<void> {
    if (ms <= 0 || this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        this.#wakers.delete(wake);
        this.#clock.clearTimeout(timer);
        resolve();
      };
      const timer = this.#clock.setTimeout(wake, ms);
      timer.unref?.();
      this.#wakers.add(wake);
    });
  }

  /** Ends the current pauses now (a retry loop told there is work); later ones sleep as usual. */
  wake(): void {
    for (const wake of [...this.#wakers]) wake();
  }

  /** Ends every pause now and every later one at once. */
  stop(): void {
    this.#stopped = true;
    for (const wake of [...this.#wakers]) wake();
  }
}
