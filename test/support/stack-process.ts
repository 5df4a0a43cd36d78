import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { listPorts, loadStackConfig, portFree } from '../../src/stack/config.ts';
import type { StackSnapshot } from '../../src/stack/snapshot.ts';
import { DATABASE_URL, uniqueName } from './env.ts';
import { waitFor } from './wait.ts';

const BIN = join(import.meta.dirname, '../../bin/cachecast.js');

/** `cachecast stack` as a child process (the compiled bin: run `npm run build` first). */
export interface StackProcess {
  child: ChildProcess;
  offset: number;
  url: string;
  /** STACK_DASHBOARD_TOKEN of this run: what a script (not a same-origin page) needs for actions. */
  token: string;
  schema: string;
  /** Everything it printed so far. */
  output(): string;
  state(): Promise<StackSnapshot>;
  post(path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Resolves with the exit code (or signal) once it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Kills it and anything it left running, drops its schema. Idempotent. */
  cleanup(): Promise<void>;
}

/**
 * A port offset at which every port of the stack is free (never 0: a user's
 * stack may run). Every port stays below 32768, where Linux's ephemeral range
 * (32768-60999) starts: a port handed out for an outgoing connection or a
 * port-0 listener could otherwise take one the stack is about to bind.
 */
async function freeOffset(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const offset = 10_000 + Math.floor(Math.random() * 1300) * 10;
    const config = loadStackConfig({}, { portOffset: offset });
    let free = true;
    for (const [, port] of listPorts(config)) {
      if (!(await portFree(port, '127.0.0.1'))) {
        free = false;
        break;
      }
    }
    if (free) return offset;
  }
  throw new Error('no free port offset for the stack');
}

/**
 * Starts the stack on free ports with its own database schema (so the sample
 * import and every write stay out of the developer's data), and waits until
 * every process is ready.
 */
export async function startStackProcess(readyTimeoutMs = 90_000): Promise<StackProcess> {
  const offset = await freeOffset();
  const schema = uniqueName('stack');
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const dbUrl = new URL(DATABASE_URL);
  dbUrl.searchParams.set('options', `-c search_path=${schema}`);

  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: dbUrl.toString(), LOG_LEVEL: 'info' };
  for (const key of Object.keys(env)) if (key.startsWith('STACK_')) delete env[key];
  const token = randomBytes(24).toString('base64url');
  env.STACK_DASHBOARD_TOKEN = token;
  const child = spawn(process.execPath, [BIN, 'stack', '--port-offset', String(offset)], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let done = false;
  void exited.then(() => (done = true));
  const url = `http://127.0.0.1:${8000 + offset}`;
  const seenPids = new Set<number>();

  const state = async (): Promise<StackSnapshot> => {
    const res = await fetch(`${url}/api/state`, { signal: AbortSignal.timeout(3000) });
    const snapshot = (await res.json()) as StackSnapshot;
    for (const p of snapshot.processes) if (p.pid) seenPids.add(p.pid);
    return snapshot;
  };

  let cleaning: Promise<void> | undefined;
  const handle: StackProcess = {
    child,
    offset,
    url,
    token,
    schema,
    output: () => output,
    state,
    async post(path, body) {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    exited,
    cleanup() {
      cleaning ??= (async () => {
        if (!done) {
          // Gracefully first: the children drain and remove their bus queues.
          child.kill('SIGINT');
          let timer: NodeJS.Timeout | undefined;
          const stopped = await Promise.race([
            exited.then(() => true),
            new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 30_000))),
          ]);
          clearTimeout(timer);
          if (!stopped) {
            child.kill('SIGKILL');
            await exited;
          }
        }
        // A stack killed outright leaves its children: they are in their own process groups.
        for (const pid of seenPids) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        const c = new pg.Client({ connectionString: DATABASE_URL });
        await c.connect();
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await c.end();
      })();
      return cleaning;
    },
  };

  try {
    await waitFor(
      async () => {
        if (done) throw new Error(`the stack exited before it was ready:\n${output}`);
        try {
          const s = await state();
          return s.total === 6 && s.ready === 6;
        } catch {
          return false;
        }
      },
      'every process of the stack ready',
      readyTimeoutMs,
      200,
    );
  } catch (err) {
    await handle.cleanup();
    throw new Error(`${(err as Error).message}\n--- stack output ---\n${output}`, { cause: err });
  }
  return handle;
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
