import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { waitFor } from './wait.ts';

const BIN = join(import.meta.dirname, '../../bin/cachecast.js');

/** `cachecast serve <name>` as a child process (the compiled bin: run `npm run build` first). */
export interface ServiceProcess {
  name: string;
  child: ChildProcess;
  /** The endpoints of its startup line (`http`, `admin`, `grpc`, ...). */
  endpoints: Record<string, string>;
  /** Everything it printed so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if it still runs. Idempotent. */
  kill(): void;
}

/** Starts `cachecast serve <name>` with `env` and waits for its startup line. */
export async function startServiceProcess(
  name: string,
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', name], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  const kill = (): void => {
    if (!done) child.kill('SIGKILL');
  };
  const startup = new RegExp(`^${name} running: (.*)$`, 'm');
  try {
    await waitFor(() => done || startup.test(output), `${name}'s startup line`, timeoutMs, 20);
  } catch (err) {
    kill();
    throw err;
  }
  const line = startup.exec(output);
  if (!line) throw new Error(`${name} exited before it started:\n${output}`);
  const endpoints: Record<string, string> = {};
  for (const part of line[1]!.split(', ')) {
    const [key, value] = part.split(' ');
    if (key && value) endpoints[key] = value;
  }
  return { name, child, endpoints, output: () => output, exited, kill };
}
