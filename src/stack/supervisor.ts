import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { OptionRangeError } from '../errors.ts';
import { numberOption } from '../options.ts';
import { deferred } from '../util/deferred.ts';
import type { Deferred } from '../util/deferred.ts';

/** One process the supervisor keeps running. */
export interface ChildSpec {
  id: string;
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * `running`: the OS process is alive; `restarting`: it exited unexpectedly and
 * comes back after a backoff; `unavailable`: this build does not have the
 * service (`unknown service`), so it is not restarted; `stopped`: after stop().
 */
export type ChildState = 'running' | 'restarting' | 'unavailable' | 'stopping' | 'stopped';

export interface ChildExit {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Epoch ms. */
  at: number;
}

export interface ChildView {
  id: string;
  state: ChildState;
  pid: number | undefined;
  /** Epoch ms the current (or last) process started. */
  started_at: number | null;
  restarts: number;
  last_exit: ChildExit | null;
  /** Epoch ms of the next start while `restarting`. */
  restart_at: number | null;
  /** The last lines the process wrote to stderr (why it failed, usually). */
  stderr_tail: string[];
}

export type SupervisorEvent =
  | { type: 'spawned'; id: string; pid: number | undefined; restarts: number }
  | {
      type: 'crashed';
      id: string;
      exit: ChildExit;
      /** Undefined when it will not be restarted (unavailable, or stopping). */
      restartInMs: number | undefined;
      reason: string;
    }
  | { type: 'unavailable'; id: string; reason: string }
  | { type: 'stopped'; id: string; exit: ChildExit | null; forced: boolean };

export interface SupervisorOptions {
  /** First restart delay; doubles per consecutive crash. @default 500 */
  restartBaseMs?: number;
  /** @default 30000 */
  restartMaxMs?: number;
  /** A process that ran this long before crashing restarts after `restartBaseMs` again. @default 30000 */
  stableAfterMs?: number;
  /** After SIGTERM, how long to wait before SIGKILL. @default 15000 */
  stopTimeoutMs?: number;
  onEvent?: (event: SupervisorEvent) => void;
  /** Every line a child writes (stdout: its pino JSON logs). */
  onOutput?: (id: string, stream: 'stdout' | 'stderr', line: string) => void;
}

interface ResolvedOptions {
  restartBaseMs: number;
  restartMaxMs: number;
  stableAfterMs: number;
  stopTimeoutMs: number;
}

const STDERR_TAIL = 20;
/**
 * After a child exits, how long its stdout/stderr may take to reach their end
 * (the tail of what it wrote). A descendant that inherited them can hold them
 * open for as long as it lives: the exit is reported without waiting longer.
 */
const STDIO_GRACE_MS = 250;

export function normalizeSupervisorOptions(o: SupervisorOptions): ResolvedOptions {
  const ms = (name: string, value: unknown, fallback: number, min: number): number =>
    numberOption(name, value, fallback, { min });
  const restartBaseMs = ms('restartBaseMs', o.restartBaseMs, 500, 1);
  return {
    restartBaseMs,
    restartMaxMs: Math.max(restartBaseMs, ms('restartMaxMs', o.restartMaxMs, 30_000, 1)),
    stableAfterMs: ms('stableAfterMs', o.stableAfterMs, 30_000, 0),
    stopTimeoutMs: ms('stopTimeoutMs', o.stopTimeoutMs, 15_000, 0),
  };
}

/**
 * Runs child processes: restarts one that exits unexpectedly (exponential
 * backoff, reset once it has run `stableAfterMs`), and on stop() sends SIGTERM
 * to each, waits for it to drain, and SIGKILLs what is left after
 * `stopTimeoutMs`. Children get their own process group, so a Ctrl-C in the
 * terminal reaches only the supervisor, which then stops them in order.
 */
export class Supervisor {
  readonly #o: ResolvedOptions;
  readonly #onEvent: (event: SupervisorEvent) => void;
  readonly #onOutput: (id: string, stream: 'stdout' | 'stderr', line: string) => void;
  readonly #children = new Map<string, ManagedChild>();
  #stopping: Promise<void> | undefined;
  readonly #exitHook = (): void => {
    // The supervisor itself dies (uncaught error, process.exit): leave no orphans.
    for (const child of this.#children.values()) child.signal('SIGTERM');
  };

  constructor(specs: readonly ChildSpec[], options: SupervisorOptions = {}) {
    this.#o = normalizeSupervisorOptions(options);
    this.#onEvent = options.onEvent ?? (() => undefined);
    this.#onOutput = options.onOutput ?? (() => undefined);
    for (const spec of specs) {
      if (this.#children.has(spec.id)) throw new OptionRangeError(`duplicate child id ${spec.id}`);
      this.#children.set(spec.id, new ManagedChild(spec, this.#o, this.#onEvent, this.#onOutput));
    }
  }

  /** Spawns every child (at once; each reports its own readiness). */
  start(): void {
    if (this.#stopping) return;
    process.on('exit', this.#exitHook);
    for (const child of this.#children.values()) child.start();
  }

  get ids(): string[] {
    return [...this.#children.keys()];
  }

  view(id: string): ChildView | undefined {
    return this.#children.get(id)?.view();
  }

  views(): ChildView[] {
    return [...this.#children.values()].map((c) => c.view());
  }

  /** Sends a signal to a running child (the dashboard's "kill"); false when it is not running. */
  kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): boolean {
    return this.#children.get(id)?.signal(signal) ?? false;
  }

  /** SIGTERM to every child, wait for each to exit (SIGKILL after the timeout). Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all([...this.#children.values()].map((c) => c.stop()));
      process.off('exit', this.#exitHook);
    })();
    return this.#stopping;
  }
}

class ManagedChild {
  readonly #spec: ChildSpec;
  readonly #o: ResolvedOptions;
  readonly #onEvent: (event: SupervisorEvent) => void;
  readonly #onOutput: (id: string, stream: 'stdout' | 'stderr', line: string) => void;
  #process: ChildProcess | undefined;
  #exited: Deferred<ChildExit> | undefined;
  /** Resolves once the current process's stdout and stderr have ended (`'close'`). */
  #drained: Deferred<void> | undefined;
  #isDrained = false;
  #state: ChildState = 'stopped';
  #startedAt: number | null = null;
  #restarts = 0;
  #consecutiveCrashes = 0;
  #lastExit: ChildExit | null = null;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartAt: number | null = null;
  #stderrTail: string[] = [];
  #stopRequested = false;

  constructor(
    spec: ChildSpec,
    options: ResolvedOptions,
    onEvent: (event: SupervisorEvent) => void,
    onOutput: (id: string, stream: 'stdout' | 'stderr', line: string) => void,
  ) {
    this.#spec = spec;
    this.#o = options;
    this.#onEvent = onEvent;
    this.#onOutput = onOutput;
  }

  view(): ChildView {
    return {
      id: this.#spec.id,
      state: this.#state,
      pid: this.#state === 'running' || this.#state === 'stopping' ? this.#process?.pid : undefined,
      started_at: this.#startedAt,
      restarts: this.#restarts,
      last_exit: this.#lastExit,
      restart_at: this.#restartAt,
      stderr_tail: [...this.#stderrTail],
    };
  }

  start(): void {
    if (this.#stopRequested) return;
    this.#restartTimer = undefined;
    this.#restartAt = null;
    this.#stderrTail = [];
    const exited = deferred<ChildExit>();
    const drained = deferred<void>();
    this.#exited = exited;
    this.#drained = drained;
    this.#isDrained = false;
    const child = spawn(this.#spec.command, [...this.#spec.args], {
      env: this.#spec.env,
      cwd: this.#spec.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: the terminal's Ctrl-C goes to the supervisor
      // only, which then sends exactly one SIGTERM (a second signal would cut
      // a service's drain short).
      detached: true,
    });
    this.#process = child;
    this.#state = 'running';
    this.#startedAt = Date.now();
    this.#pipe(child, 'stdout');
    this.#pipe(child, 'stderr');
    let done = false;
    let grace: NodeJS.Timeout | undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(grace);
      if (done) return;
      done = true;
      const exit: ChildExit = { pid: child.pid, code, signal, at: Date.now() };
      this.#lastExit = exit;
      exited.resolve(exit);
      this.#onExit(exit);
    };
    // 'close' comes once stdio is drained too, so the stderr tail is complete; but a descendant
    // holding stdio would delay it indefinitely, so 'exit' plus a short grace is enough.
    child.once('exit', (code, signal) => {
      grace = setTimeout(() => finish(code, signal), STDIO_GRACE_MS);
    });
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (this.#process === child) this.#isDrained = true;
      drained.resolve();
      finish(code, signal);
    });
    child.once('error', (err) => {
      // Spawn failed (no such executable...): there is no exit event then.
      this.#stderrTail.push(`spawn failed: ${err.message}`);
      if (child.pid === undefined) finish(null, null);
    });
    this.#onEvent({ type: 'spawned', id: this.#spec.id, pid: child.pid, restarts: this.#restarts });
  }

  #pipe(child: ChildProcess, stream: 'stdout' | 'stderr'): void {
    const source = child[stream];
    if (!source) return;
    const lines = createInterface({ input: source, crlfDelay: Infinity });
    lines.on('line', (line) => {
      if (stream === 'stderr') {
        this.#stderrTail.push(line);
        if (this.#stderrTail.length > STDERR_TAIL) this.#stderrTail.shift();
      }
      this.#onOutput(this.#spec.id, stream, line);
    });
  }

  #onExit(exit: ChildExit): void {
    if (this.#stopRequested) {
      this.#state = 'stopped';
      return;
    }
    const reason = describeExit(exit);
    if (this.#stderrTail.some((l) => /unknown service/i.test(l))) {
      this.#state = 'unavailable';
      const why = `this build has no such service (${this.#stderrTail.at(-1) ?? reason})`;
      this.#onEvent({ type: 'unavailable', id: this.#spec.id, reason: why });
      return;
    }
    const ranFor = exit.at - (this.#startedAt ?? exit.at);
    if (ranFor >= this.#o.stableAfterMs) this.#consecutiveCrashes = 0;
    const delay = Math.min(this.#o.restartMaxMs, this.#o.restartBaseMs * 2 ** this.#consecutiveCrashes);
    this.#consecutiveCrashes = Math.min(this.#consecutiveCrashes + 1, 30);
    this.#state = 'restarting';
    this.#restartAt = Date.now() + delay;
    this.#restartTimer = setTimeout(() => {
      this.#restarts++;
      this.start();
    }, delay);
    this.#onEvent({ type: 'crashed', id: this.#spec.id, exit, restartInMs: delay, reason });
  }

  /**
   * Signals the process's group (it leads one: anything it spawned gets it
   * too), also after the leader exited while a descendant still holds its
   * stdio (the group lives on with it); false when nothing of it runs.
   */
  signal(signal: NodeJS.Signals): boolean {
    const child = this.#process;
    if (!child || child.pid === undefined) return false;
    const leaderAlive = child.exitCode === null && child.signalCode === null;
    // Once the leader and its stdio are gone, the pid may be someone else's by now.
    if (!leaderAlive && this.#isDrained) return false;
    try {
      process.kill(-child.pid, signal);
    } catch {
      if (!leaderAlive) return false;
      try {
        child.kill(signal);
      } catch {
        return false;
      }
    }
    return true;
  }

  async stop(): Promise<void> {
    this.#stopRequested = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    this.#restartAt = null;
    const exited = this.#exited;
    if (this.#state !== 'running' || !exited) {
      if (this.#state !== 'unavailable') this.#state = 'stopped';
      this.#onEvent({ type: 'stopped', id: this.#spec.id, exit: null, forced: false });
      return;
    }
    this.#state = 'stopping';
    const child = this.#process;
    const drained = this.#drained;
    const deadline = Date.now() + this.#o.stopTimeoutMs;
    this.signal('SIGTERM');
    let forced = false;
    if ((await raceTimeout(exited.promise, this.#o.stopTimeoutMs)) === 'timeout') {
      forced = true;
      this.signal('SIGKILL');
    }
    const exit = await exited.promise;
    // A descendant that outlived its leader still holds its stdio (and its process group alive):
    // it gets what is left of the same deadline (at least the grace), then SIGKILL too.
    if (drained && !this.#isDrained) {
      const left = Math.max(STDIO_GRACE_MS, deadline - Date.now());
      if ((await raceTimeout(drained.promise, left)) === 'timeout') {
        forced = true;
        this.signal('SIGKILL');
        child?.stdout?.destroy();
        child?.stderr?.destroy();
      }
    }
    this.#state = 'stopped';
    this.#onEvent({ type: 'stopped', id: this.#spec.id, exit, forced });
  }
}

/** `promise`'s value, or 'timeout' after `ms`. */
async function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function describeExit(exit: Pick<ChildExit, 'code' | 'signal'>): string {
  if (exit.signal) return `killed by ${exit.signal}`;
  if (exit.code === null) return 'could not be started';
  return `exited with code ${exit.code}`;
}
