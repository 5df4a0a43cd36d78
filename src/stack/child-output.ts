import { timeOfDay } from './activity.ts';

/** A child's log line, as the dashboard shows its last one. */
export interface LogLine {
  at: number;
  level: string;
  msg: string;
}

/** pino's numeric levels. */
const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/**
 * What the children print: each one's last log line is kept for the
 * dashboard; warnings, errors and stderr go to the terminal (every line when
 * verbose).
 */
export class ChildOutput {
  readonly #out: (line: string) => void;
  readonly #verbose: boolean;
  readonly #last = new Map<string, LogLine>();

  constructor(out: (line: string) => void, verbose: boolean) {
    this.#out = out;
    this.#verbose = verbose;
  }

  /** The last log line `id` printed. */
  last(id: string): LogLine | undefined {
    return this.#last.get(id);
  }

  /** One line a child printed (the supervisor's onOutput). */
  readonly line = (id: string, stream: 'stdout' | 'stderr', line: string): void => {
    const log = parseLogLine(line);
    if (log) this.#last.set(id, log);
    const loud =
      stream === 'stderr' ||
      (log ? log.level !== 'info' && log.level !== 'debug' && log.level !== 'trace' : true);
    if (this.#verbose || loud) {
      this.#out(
        log
          ? `${timeOfDay(log.at)} [${id}] ${log.level === 'info' ? '' : `${log.level.toUpperCase()} `}${log.msg}`
          : `[${id}] ${line}`,
      );
    }
  };
}

function parseLogLine(line: string): LogLine | null {
  if (!line.startsWith('{')) return null;
  try {
    const entry = JSON.parse(line) as Record<string, unknown>;
    const level = typeof entry.level === 'number' ? (LEVELS[entry.level] ?? String(entry.level)) : 'info';
    let msg = typeof entry.msg === 'string' ? entry.msg : '';
    if (typeof entry.err === 'string') msg += `: ${entry.err}`;
    return { at: typeof entry.time === 'number' ? entry.time : Date.now(), level, msg };
  } catch {
    return null;
  }
}
