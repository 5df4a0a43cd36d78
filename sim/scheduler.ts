import type { Clock, TimerHandle } from '../src/clock.ts';

interface Task {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * Virtual time for one schedule. Every timer of the code under test (through
 * the injected Clock) and every action of the simulated world is a task here;
 * `run()` pops them in time order and lets the promise chains each one started
 * settle before the next, so a run depends on the seed alone.
 */
export class Scheduler implements Clock {
  #now: number;
  #seq = 0;
  #tasks: Task[] = [];
  steps = 0;

  constructor(start: number) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.at(this.#now + Math.max(0, ms), fn) as unknown as TimerHandle;
  }

  clearTimeout(handle: TimerHandle): void {
    (handle as unknown as Task).cancelled = true;
  }

  /** Runs `fn` at absolute time `at`. */
  at(at: number, fn: () => void): Task {
    const task: Task = { at, seq: this.#seq++, fn, cancelled: false };
    // Binary insertion keeps the queue sorted by (at, seq).
    let lo = 0;
    let hi = this.#tasks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const t = this.#tasks[mid]!;
      if (t.at < at || (t.at === at && t.seq < task.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.#tasks.splice(lo, 0, task);
    return task;
  }

  /** Runs every task due up to `end`, in order; then the clock stands at `end`. */
  async run(end: number): Promise<void> {
    for (;;) {
      const task = this.#tasks[0];
      if (!task || task.at > end) break;
      this.#tasks.shift();
      if (task.cancelled) continue;
      this.#now = task.at;
      this.steps++;
      task.fn();
      await settle();
    }
    this.#now = end;
    await settle();
  }
}

/** Lets every promise chain started so far run to its next wait on virtual time. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
