// h2load (Debian's nghttp2-client) as the authz bench's load generator: a
// C client on its own core costs a few µs per request, where autocannon or a
// grpc-js client in the bench process cost more than the server they measure.
// Runs one slice of load, pinned to a core when taskset is there, and reads
// back req/s, every answer's latency (--log-file), the bytes answered and
// the CPU h2load itself used.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLK_TCK = 100; // Linux USER_HZ

export function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** taskset is there and the machine has a core for the servers and another for the load generator. */
export function canPin(cores: number): boolean {
  return cores >= 2 && hasCommand('taskset');
}

/** Pins every thread of `pid` (V8's and libuv's too) to `core`. */
export function pinToCore(pid: number, core: number): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`taskset could not pin ${pid} to core ${core}`);
}

/** CPU (user + system) used so far by this process's reaped children, ms: h2load's, once it has exited. */
function reapedChildrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[13]) + Number(fields[14])) / CLK_TCK) * 1000;
}

export interface H2loadSlice {
  seconds: number;
  /** Answers with HTTP status 200, and each one's latency (ms). */
  latencies: number[];
  /** Requests that failed, errored, timed out or answered another status. */
  failures: number;
  /** Response body bytes h2load counted ("traffic: ... data"), for checking what the answers were. */
  dataBytes: number;
  /** CPU h2load used, ms. */
  generatorCpuMs: number;
}

export interface H2loadOptions {
  url: string;
  /** h2load flags for the protocol and the request (-c, -m, --h1, -H, -d ...). */
  args: string[];
  seconds: number;
  /** Runs h2load under `taskset -c core`. */
  core?: number;
}

/** One timed run of h2load. */
export async function h2load(options: H2loadOptions): Promise<H2loadSlice> {
  const dir = mkdtempSync(join(tmpdir(), 'h2load-'));
  const log = join(dir, 'requests.tsv');
  const args = [...options.args, '-D', String(options.seconds), `--log-file=${log}`, options.url];
  const [command, argv] =
    options.core === undefined
      ? ['h2load', args]
      : ['taskset', ['-c', String(options.core), 'h2load', ...args]];
  const cpuBefore = reapedChildrenCpuMs();
  try {
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`h2load exited ${code}:\n${out}`)),
      );
    });
    const generatorCpuMs = reapedChildrenCpuMs() - cpuBefore;
    const finished = /finished in ([\d.]+)(m?s),/.exec(output);
    const requests =
      /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
        output,
      );
    const traffic = /traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data/.exec(output);
    if (!finished || !requests || !traffic) throw new Error(`h2load: unexpected output:\n${output}`);
    const seconds = Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1);
    const latencies: number[] = [];
    let other = 0;
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (!line) continue;
      const [, status, us] = line.split('\t');
      if (status === '200') latencies.push(Number(us) / 1000);
      else other++;
    }
    const failures = Number(requests[5]) + Number(requests[6]) + Number(requests[7]) + other;
    return { seconds, latencies, failures, dataBytes: Number(traffic[3]), generatorCpuMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A gRPC request body for h2load's -d: the 5-byte prefix and the message. */
export function writeGrpcBody(message: Buffer): { file: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'grpc-body-'));
  const file = join(dir, 'request.bin');
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  writeFileSync(file, frame);
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
