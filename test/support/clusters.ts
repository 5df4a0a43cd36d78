import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SCRIPTS = join(import.meta.dirname, '../../scripts');

/** scripts/redis-sentinel.sh <args>: its standard output. Async, so the event loop goes on. */
export async function sentinelScript(...args: string[]): Promise<string> {
  const { stdout } = await run('bash', [join(SCRIPTS, 'redis-sentinel.sh'), ...args], { timeout: 120_000 });
  return stdout;
}

/** scripts/rabbit-cluster.sh <args>: its standard output. */
export async function rabbitClusterScript(...args: string[]): Promise<string> {
  const { stdout } = await run('bash', [join(SCRIPTS, 'rabbit-cluster.sh'), ...args], { timeout: 300_000 });
  return stdout;
}

/** `KEY=value` lines (what `up` prints) as an environment. */
export function envLines(stdout: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}
