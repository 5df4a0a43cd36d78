import type { RunningStack } from './stack.ts';
import { startStack } from './stack.ts';

export interface StackCommandOptions {
  portOffset?: number;
  verbose?: boolean;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** A second signal this soon after the first is the same one delivered twice (see below). */
const SAME_SIGNAL_MS = 1000;

/**
 * `cachecast stack`: starts the stack, then waits for SIGINT/SIGTERM/SIGHUP
 * and stops it (every child gets SIGTERM and drains). A second Ctrl-C while
 * it drains kills what is left and exits at once. A signal during startup
 * stops the stack as soon as it has started, so no child is left behind.
 */
export async function runStackCommand(options: StackCommandOptions): Promise<void> {
  let stack: RunningStack | undefined;
  let firstAt = 0;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stop = (): void => {
    void stack!.close().then(stopped);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (firstAt === 0) {
      firstAt = Date.now();
      process.stdout.write(`\n${signal}: stopping the stack (Ctrl-C again to kill at once)\n`);
      if (stack) stop();
      return;
    }
    // Under `npm start` one Ctrl-C arrives twice: from the terminal, and forwarded by npm.
    if (Date.now() - firstAt < SAME_SIGNAL_MS) return;
    process.stdout.write(`${signal} again: killing every process\n`);
    stack?.kill();
    process.exit(130);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    stack = await startStack({
      ...(options.portOffset === undefined ? {} : { portOffset: options.portOffset }),
      verbose: options.verbose ?? false,
    });
    if (firstAt !== 0) stop();
    await done;
  } finally {
    for (const s of SIGNALS) process.off(s, onSignal);
  }
}
