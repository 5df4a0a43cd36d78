import type { ActivityLine } from './dashboard-server.ts';

/** How many lines the dashboard gets when it (re)connects. */
const KEEP = 200;

/** The wall-clock time of day of `at`, to the millisecond: the terminal's timestamps. */
export function timeOfDay(at: number): string {
  return new Date(at).toISOString().slice(11, 23);
}

/**
 * The stack's activity log: what happened (crashes, restarts, actions,
 * status changes), printed to the terminal and sent to the dashboard.
 */
export class ActivityLog {
  readonly #out: (line: string) => void;
  readonly #lines: ActivityLine[] = [];
  #seq = 0;
  /** Where each new line also goes (the dashboard, once it exists). */
  onLine: ((line: ActivityLine) => void) | undefined;

  constructor(out: (line: string) => void) {
    this.#out = out;
  }

  /** Adds a line (bound, so it can be handed around as a callback). */
  readonly report = (level: ActivityLine['level'], message: string): void => {
    const line: ActivityLine = { seq: ++this.#seq, at: Date.now(), level, message };
    this.#lines.push(line);
    if (this.#lines.length > KEEP) this.#lines.shift();
    this.#out(`${timeOfDay(line.at)} ${level === 'info' ? '' : `${level.toUpperCase()} `}${message}`);
    this.onLine?.(line);
  };

  /** The recent lines, oldest first. */
  recent(): ActivityLine[] {
    return [...this.#lines];
  }
}
