// ext-authz (seed 001): the check every API request pays, the revocation's
// way to every instance, and the time to ready with a big blacklist. Every
// server under test is its own child process running the CLI from src/
// (`cachecast serve ext-authz`, or `serve auth`, through tsx), as deployed.
//
// 1. Throughput with REVOKED revoked jtis in Redis: replica mode (the seed's
//    fix: a local replica answers) vs redis mode (the seed's before: one
//    EXISTS per check) vs a do-nothing server (the ceiling, bench/authz-ceiling.ts:
//    a node:http server answering 200 with the same two headers, byte for
//    byte; for gRPC a do-nothing server on src/http/h2, the one ext-authz
//    runs on, answering the same OK). gRPC also against a do-nothing
//    node:http2 server: what a Node gRPC server would otherwise cost.
//    Load: h2load (nghttp2-client), a C client that costs a few µs per
//    request: HTTP/1.1 with HTTP_CONNECTIONS connections, no pipelining (as
//    Envoy's pool calls it); gRPC with GRPC_CONNECTIONS connections x
//    GRPC_STREAMS streams, posting one CheckRequest as Envoy fills it. With
//    taskset and 2+ cores, every server runs on core 0 and h2load on core 1.
//    A WARMUP_S s warm-up per target, then ROUNDS rounds of one SLICE_S s
//    slice per target, alternating, each target's slices pooled; the CPU
//    each party used (server, Redis, h2load) is read around every slice:
//    per request, it is what the shared machine's noise moves least.
//    Then HTTP again with Redis shared, as the seed's was: another client
//    (redis-benchmark, BUSY_CLIENTS connections, each looping a Lua script
//    that spins about half a millisecond) keeps Redis's single thread busy,
//    so every command waits its turn, as in the seed's 1,100 requests/s
//    queue. Redis's core is then taken, so every target has less CPU.
// 2. Propagation with 1 auth + K ext-authz (replica mode), two ways per
//    logout, alternating. Polled: log in, check allowed on every instance,
//    log out and at once poll every instance (one keep-alive connection
//    each, back-to-back requests) until each answers 401; logout sent -> the
//    last instance refusing. On 2 cores the polling itself loads the machine
//    (the logout's own round trip shows by how much), so also quiet: log
//    out with nothing polling, then read when each instance applied the
//    event (its /replicas last_event_at, wall clock, 1 ms resolution) and
//    check once that it refuses.
// 3. Time to ready with READY_KEYS revoked jtis: spawn -> /readyz 200, for
//    replica mode (loads them all) and redis mode (loads nothing: the
//    process's own startup); ceiling: a bare SCAN of the keys.
//
// Uses Redis DB 3 only (REDIS_AUTHZ_BENCH_URL), flushed before and after,
// with the services' own key names (blacklist:<jti>,
// cachecast:version:blacklist): never DB 0 (a running stack) or 1 (the tests),
// nor DB 15, which the other benches flush.
// The services' exchange, auth.blacklist.events, has a fixed name: the benches
// run in the RabbitMQ vhost cachecast-bench (bench/lib.ts), so a running stack's
// or the tests' logouts never reach these replicas, nor these theirs.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import os from 'node:os';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createClient } from 'redis';
import { loadJwtConfig } from '../src/auth/jwt/config.ts';
import { createIssuer } from '../src/auth/jwt/issuer.ts';
import type { IssuedToken } from '../src/auth/jwt/issuer.ts';
import { BLACKLIST_KEY_PREFIX, BLACKLIST_KEYS, BLACKLIST_VERSION_KEY } from '../src/datasets/blacklist.ts';
import { authorizationService } from '../src/services/ext-authz/envoy-protos.ts';
import { checkResponseFrame } from '../src/services/ext-authz/check-wire.ts';
import { CHECK_PATH } from '../src/services/ext-authz/grpc-server.ts';
import type { RedisClient } from '../src/redis/client.ts';
import { newEpoch } from '../src/sources/memory-source.ts';
import { epochServerKey } from '../src/sources/redis-scripts.ts';
import { canPin, h2load, hasCommand, pinToCore, writeGrpcBody } from './h2load.ts';
import type { Row } from './lib.ts';
import {
  bareScan,
  elapsedMs,
  fmt,
  loadExpiringKeys,
  median,
  nowNs,
  percentile,
  printRows,
  benchRabbitmqUrl,
  redisCpuMs,
  row,
  sleepMs,
  writeResult,
} from './lib.ts';

const RABBITMQ_URL = benchRabbitmqUrl();

/** Its own database: 1M keys must not land in a stack's DB 0 or the tests' DB 1, nor be flushed by another bench. */
const REDIS_URL = process.env.REDIS_AUTHZ_BENCH_URL || 'redis://127.0.0.1:6379/3';
/** HTTP/1.1 connections, one request at a time on each (Envoy's HTTP pool). */
const HTTP_CONNECTIONS = Number(process.env.BENCH_AUTHZ_HTTP_CONNECTIONS ?? 32);
/** gRPC: connections x concurrent streams on each. */
const GRPC_CONNECTIONS = Number(process.env.BENCH_AUTHZ_GRPC_CONNECTIONS ?? 4);
const GRPC_STREAMS = Number(process.env.BENCH_AUTHZ_GRPC_STREAMS ?? 16);
/** Envoy's grpc_service timeout in deploy/envoy/envoy-grpc.yaml (0.2s), sent as it sends it. */
const GRPC_TIMEOUT = '200m';
/** With taskset and 2+ cores: the servers under test on one core, h2load on the other. */
const PINNED = canPin(os.cpus().length);
const SERVER_CORE = 0;
const GENERATOR_CORE = 1;
/** Seconds per slice of load; ROUNDS slices per target. */
const SLICE_S = Number(process.env.BENCH_AUTHZ_SLICE_S ?? 2);
const WARMUP_S = 1;
/** Connections of the other Redis client in the shared-Redis round. */
const BUSY_CLIENTS = Number(process.env.BENCH_AUTHZ_BUSY_CLIENTS ?? 4);
/** About half a millisecond of Lua per call on this class of machine. */
const BUSY_SCRIPT = 'local x = 0 for i = 1, 40000 do x = x + i end return x';
const ROUNDS = Number(process.env.BENCH_AUTHZ_ROUNDS ?? 5);
/** Time-to-ready rounds (each spawns a replica that loads READY_KEYS). */
const READY_ROUNDS = Number(process.env.BENCH_AUTHZ_READY_ROUNDS ?? 2);
const REVOKED = Number(process.env.BENCH_AUTHZ_REVOKED ?? 100_000);
const READY_KEYS = Number(process.env.BENCH_AUTHZ_READY_KEYS ?? 1_000_000);
const FLEETS = (process.env.BENCH_AUTHZ_FLEETS ?? '2,8').split(',').map(Number);
const LOGOUTS = Number(process.env.BENCH_AUTHZ_LOGOUTS ?? 40);
const LOGOUT_WARMUP = 3;
/** Pause between one instance's polls after a logout; 0: back-to-back (a tight loop). */
const POLL_GAP_MS = Number(process.env.BENCH_AUTHZ_POLL_GAP_MS ?? 0);
/** Which parts to run (all by default): throughput, propagation, ready. */
const PHASES = (process.env.BENCH_AUTHZ_PHASES ?? 'throughput,propagation,ready').split(',');
const SCAN_COUNTS = [1000, 5000] as const;
const READY_POLL_MS = 10;
const JWT_SECRET = 'bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const ROOT = join(import.meta.dirname, '..');
/**
 * bin/cachecast.js, but on src/ through tsx rather than on the compiled dist/
 * (src/cli/main.ts only exports main(): run as a script it would do nothing).
 */
const CLI_FROM_SOURCE =
  "import { main } from './src/cli/main.ts'; process.exitCode = await main(process.argv.slice(1));";

// ---------------------------------------------------------------- child processes

const CLK_TCK = 100; // Linux USER_HZ
const children = new Set<ChildProcess>();

/** Whatever way this process ends (an error, Ctrl-C), no child outlives it. */
function killChildrenOnExit(): void {
  process.once('exit', () => {
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
}

interface Child {
  name: string;
  proc: ChildProcess;
  spawnedAt: bigint;
  exited: Promise<void>;
  /** The last few KiB of stdout + stderr, shown when it fails. */
  tail(): string;
  /** Resolves with ms since spawn when a stdout line contains `text`. */
  line(text: string): Promise<number>;
}

function spawnNode(name: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const spawnedAt = nowNs();
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let output = '';
  const waiters: Array<{ text: string; resolve: (ms: number) => void }> = [];
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4096);
  };
  proc.stdout.on('data', (chunk: Buffer) => {
    const ms = elapsedMs(spawnedAt);
    keep(chunk);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (output.includes(waiters[i]!.text)) waiters.splice(i, 1)[0]!.resolve(ms);
    }
  });
  proc.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) =>
    proc.once('exit', () => {
      children.delete(proc);
      resolve();
    }),
  );
  return {
    name,
    proc,
    spawnedAt,
    exited,
    tail: () => output,
    line: (text) =>
      output.includes(text)
        ? Promise.resolve(elapsedMs(spawnedAt))
        : Promise.race([
            new Promise<number>((resolve) => waiters.push({ text, resolve })),
            exited.then(() => {
              throw new Error(`${name} exited before printing "${text}":\n${output}`);
            }),
          ]),
  };
}

async function stopChild(child: Child): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill('SIGTERM');
  const timer = sleepMs(5000).then(() => 'timeout' as const);
  if ((await Promise.race([child.exited.then(() => 'exited' as const), timer])) === 'timeout') {
    child.proc.kill('SIGKILL');
    await child.exited;
  }
}

/** user + system CPU the process has used so far, ms (Linux /proc). */
function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / CLK_TCK) * 1000;
  } catch {
    return NaN;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** One request on `agent`; the status and (for a refusal) the body. */
function httpGet(
  agent: Agent | false,
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface Service {
  child: Child;
  port: number;
  grpcPort: number;
  adminPort: number;
  /** spawn -> /readyz 200 on the admin port (polled every READY_POLL_MS). */
  readyMs: number;
  /** spawn -> the CLI's `<service> running:` line. */
  lineMs: number;
  /** CPU the process used until ready, ms. */
  cpuMs: number;
  /** Keep-alive connection for checks from this process. */
  agent: Agent;
}

async function startService(
  kind: 'ext-authz' | 'auth',
  name: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Service> {
  const [port, adminPort, grpcPort] = [await freePort(), await freePort(), await freePort()];
  const child = spawnNode(name, ['--input-type=module', '-e', CLI_FROM_SOURCE, 'serve', kind], {
    HOST: '127.0.0.1',
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
    GRPC_PORT: String(grpcPort),
    RABBITMQ_URL,
    REDIS_URL,
    JWT_SECRET,
    LOG_LEVEL: 'warn',
    ...env,
  });
  const line = child.line(`${kind} running:`);
  line.catch(() => undefined); // awaited below once ready; an early exit is reported by the loop
  let died = false;
  void child.exited.then(() => (died = true));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (died) throw new Error(`${name} exited before ready:\n${child.tail()}`);
    if (Date.now() > deadline) throw new Error(`${name} not ready after 120 s:\n${child.tail()}`);
    const status = await httpGet(false, adminPort, '/readyz').then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) break;
    await sleepMs(READY_POLL_MS);
  }
  const readyMs = elapsedMs(child.spawnedAt);
  const cpuMs = processCpuMs(child.proc.pid!);
  const lineMs = await line;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  return { child, port, grpcPort, adminPort, readyMs, lineMs, cpuMs, agent };
}

async function stopService(service: Service): Promise<void> {
  service.agent.destroy();
  await stopChild(service.child);
}

interface ReplicaStats {
  state: string;
  size: number;
  version: number;
  gaps: number;
  resyncs: number;
  events_applied: number;
  events_rejected: number;
  last_event_at: string | null;
  lag_ms: number | null;
}

async function replicaStats(service: Service): Promise<ReplicaStats> {
  const { body } = await httpGet(false, service.adminPort, '/replicas');
  const stats = (JSON.parse(body) as Array<ReplicaStats & { dataset: string }>).find(
    (r) => r.dataset === 'blacklist',
  );
  if (!stats) throw new Error(`${service.child.name} holds no blacklist replica`);
  return stats;
}

/** Every figure must come from the live path: no gap, no resync after the first, no rejected event. */
async function assertLivePath(service: Service): Promise<ReplicaStats> {
  const stats = await replicaStats(service);
  if (stats.gaps !== 0 || stats.resyncs !== 1 || stats.events_rejected !== 0 || stats.state !== 'ready') {
    throw new Error(
      `${service.child.name} left the live path: ${JSON.stringify(stats)} ` +
        '(another process publishing on auth.blacklist.events at the same time, e.g. the tests?)',
    );
  }
  return stats;
}

// ---------------------------------------------------------------- load

/** Every target's figures, pooled over its slices. */
interface Load {
  reqPerS: number;
  /** ms, allowed answers only. */
  p50: number;
  p99: number;
  /** Answers that were not an allow (non-2xx, gRPC status != OK) or failed. */
  failures: number;
  /** CPU per request, µs: the server process, Redis, h2load (the load generator). */
  serverCpuUs: number;
  redisCpuUs: number;
  clientCpuUs: number;
}

/** One run of load against one target. */
interface Slice {
  seconds: number;
  /** One per allowed answer, ms. */
  latencies: number[];
  failures: number;
  /** CPU the load generator used, ms. */
  clientCpuMs: number;
}

interface Target {
  name: string;
  pid: number;
  port: number;
  grpcPort: number;
}

/** Drives one target: `run(seconds)` is one slice of load. */
interface Driver {
  run(seconds: number): Promise<Slice>;
  close(): void;
}

const core = PINNED ? { core: GENERATOR_CORE } : {};
const HTTP_LOAD = `${HTTP_CONNECTIONS} connections`;
const GRPC_LOAD = `${GRPC_CONNECTIONS} connections x ${GRPC_STREAMS} streams`;

function httpDriver(target: Target, token: string): Driver {
  return {
    async run(seconds) {
      const slice = await h2load({
        url: `http://127.0.0.1:${target.port}/api/v1/some/resource`,
        args: ['--h1', '-c', String(HTTP_CONNECTIONS), '-m', '1', '-H', `authorization: Bearer ${token}`],
        seconds,
        ...core,
      });
      return { ...slice, clientCpuMs: slice.generatorCpuMs };
    },
    close() {},
  };
}

/** A CheckRequest as Envoy fills it for a GET: peers, time, the request line and its headers. */
function envoyCheckRequest(token: string): Buffer {
  const path = '/api/v1/some/resource';
  const headers = {
    ':authority': 'api.example.com',
    ':method': 'GET',
    ':path': path,
    ':scheme': 'http',
    accept: '*/*',
    'user-agent': 'curl/8.5.0',
    'x-forwarded-proto': 'http',
    'x-request-id': '5f0b7c1e-9a3d-4c52-8e1f-2b6d7a9c0e13',
    authorization: `Bearer ${token}`,
  };
  const address = (ip: string, port: number) => ({
    address: { socket_address: { address: ip, port_value: port } },
  });
  const method = (
    authorizationService().service as unknown as { Check: { requestSerialize(v: unknown): Buffer } }
  ).Check;
  return method.requestSerialize({
    attributes: {
      source: address('10.0.0.7', 51234),
      destination: address('10.0.0.2', 8080),
      request: {
        time: { seconds: 1764900000, nanos: 123456000 },
        http: {
          id: '17029384756102938475',
          method: 'GET',
          headers,
          path,
          host: 'api.example.com',
          scheme: 'http',
          protocol: 'HTTP/1.1',
        },
      },
    },
  });
}

/**
 * h2load posting the same CheckRequest on every stream; every answer must be
 * the allow CheckResponse (h2load sees HTTP 200 for any gRPC status, so the
 * answered bytes are compared with `allowBytes` per answer).
 */
function grpcDriver(target: Target, body: string, allowBytes: number, denyBytes: number): Driver {
  return {
    async run(seconds) {
      const slice = await h2load({
        url: `http://127.0.0.1:${target.grpcPort}${CHECK_PATH}`,
        args: [
          '-c',
          String(GRPC_CONNECTIONS),
          '-m',
          String(GRPC_STREAMS),
          '-d',
          body,
          '-H',
          'content-type: application/grpc',
          '-H',
          'te: trailers',
          '-H',
          `grpc-timeout: ${GRPC_TIMEOUT}`,
        ],
        seconds,
        ...core,
      });
      // h2load also counts the data of the streams it stops at the end (whole or partial
      // answers, trailers unread): up to one allow answer per stream in flight on top of the
      // answers it logged. Outside that band, answers were errors (no message) or denies
      // (revocation_unavailable in redis mode, a longer message): about this many.
      const extra = slice.dataBytes - slice.latencies.length * allowBytes;
      const band = GRPC_CONNECTIONS * GRPC_STREAMS * allowBytes;
      const outside = extra < 0 ? -extra : Math.max(0, extra - band);
      const odd =
        outside === 0
          ? 0
          : Math.max(1, Math.round(outside / Math.min(allowBytes, Math.abs(denyBytes - allowBytes))));
      return { ...slice, failures: slice.failures + odd, clientCpuMs: slice.generatorCpuMs };
    },
    close() {},
  };
}

/**
 * replica and redis: ext-authz in each mode; ceiling: the do-nothing servers
 * (node:http; for gRPC the same src/http/h2 server ext-authz runs on, the
 * leanest written here); http2: a do-nothing gRPC server on node:http2, what
 * a Node server would otherwise use (gRPC only).
 */
const KINDS = ['replica', 'redis', 'ceiling', 'http2'] as const;
type Kind = (typeof KINDS)[number];
type Loads = Record<Exclude<Kind, 'http2'>, Load> & { http2?: Load };

/**
 * A WARMUP_S slice per target and transport, then ROUNDS rounds of one
 * SLICE_S slice per target and transport (the order rotating), so that the
 * machine's noise hits them alike; each one's slices pooled, with the CPU
 * every party used during them.
 */
async function loadAll<T extends string>(
  what: string,
  targets: Record<Kind, Target>,
  redis: RedisClient,
  drive: Record<T, (target: Target) => Driver>,
): Promise<Record<T, Loads>> {
  const transports = Object.keys(drive) as T[];
  const runs = transports.flatMap((transport) =>
    KINDS.filter((kind) => (transport === 'gRPC' ? targets[kind].grpcPort : targets[kind].port) > 0).map(
      (kind) => ({
        transport,
        kind,
        pid: targets[kind].pid,
        driver: drive[transport](targets[kind]),
        pooled: { seconds: 0, latencies: [] as number[], failures: 0, server: 0, redis: 0, client: 0 },
      }),
    ),
  );
  try {
    for (const run of runs) await run.driver.run(WARMUP_S);
    for (let round = 0; round < ROUNDS; round++) {
      for (let j = 0; j < runs.length; j++) {
        const { driver, pid, pooled: p } = runs[(round + j) % runs.length]!;
        const server = processCpuMs(pid);
        const redisCpu = await redisCpuMs(redis);
        const slice = await driver.run(SLICE_S);
        p.server += processCpuMs(pid) - server;
        p.redis += (await redisCpuMs(redis)) - redisCpu;
        p.client += slice.clientCpuMs;
        p.seconds += slice.seconds;
        p.failures += slice.failures;
        for (const ms of slice.latencies) p.latencies.push(ms);
      }
    }
    const out = Object.fromEntries(transports.map((t) => [t, {} as Loads])) as Record<T, Loads>;
    for (const { transport, kind, pooled: p } of runs) {
      const n = p.latencies.length;
      out[transport][kind] = {
        reqPerS: n / p.seconds,
        p50: percentile(p.latencies, 50),
        p99: percentile(p.latencies, 99),
        failures: p.failures,
        serverCpuUs: (p.server * 1000) / n,
        redisCpuUs: (p.redis * 1000) / n,
        clientCpuUs: (p.client * 1000) / n,
      };
      if (kind !== 'redis' && p.failures > 0) {
        throw new Error(`${what} ${transport} ${kind}: ${p.failures} requests were not allowed or failed`);
      }
    }
    return out;
  } finally {
    for (const run of runs) run.driver.close();
  }
}

function loadRows(transport: string, load: string, loads: Loads, ceilingLabel: string): Row[] {
  const { replica, redis, ceiling } = loads;
  const us = (l: Load): number => 1e6 / l.reqPerS;
  const cpu = (l: Load): number => l.serverCpuUs + l.redisCpuUs;
  return [
    row(`${transport} check, ${load}: time per request (1 / throughput), replica mode`, us(replica), 'µs', {
      baseline: { label: 'redis mode (EXISTS per check)', value: us(redis) },
      ceiling: { label: ceilingLabel, value: us(ceiling) },
      headline: `ext-authz ${transport} check, ${load}: time per request`,
      note:
        `req/s: replica ${fmt(replica.reqPerS)}, redis ${fmt(redis.reqPerS)}, ceiling ${fmt(ceiling.reqPerS)} ` +
        `(replica/redis x${fmt(replica.reqPerS / redis.reqPerS)}, replica/ceiling x${fmt(replica.reqPerS / ceiling.reqPerS)})` +
        (redis.failures > 0 ? `; redis mode refused or failed ${redis.failures} valid requests` : ''),
    }),
    row(`${transport} check, ${load}: p99 latency, replica mode`, replica.p99, 'ms', {
      baseline: { label: 'redis mode', value: redis.p99 },
      ceiling: { label: ceilingLabel, value: ceiling.p99 },
      note: `p50: replica ${fmt(replica.p50)} ms, redis ${fmt(redis.p50)} ms, ceiling ${fmt(ceiling.p50)} ms`,
    }),
    // What a shared machine's noise moves least: the CPU each request cost, wherever it ran.
    row(`${transport} check: CPU per request, server + Redis, replica mode`, cpu(replica), 'µs', {
      baseline: { label: 'redis mode', value: cpu(redis) },
      ceiling: { label: ceilingLabel, value: cpu(ceiling) },
      note:
        `server / Redis: replica ${fmt(replica.serverCpuUs)} / ${fmt(replica.redisCpuUs)}, redis mode ` +
        `${fmt(redis.serverCpuUs)} / ${fmt(redis.redisCpuUs)}, ceiling ${fmt(ceiling.serverCpuUs)} / ` +
        `${fmt(ceiling.redisCpuUs)} µs; the load generator (h2load): ${fmt(replica.clientCpuUs)}, ` +
        `${fmt(redis.clientCpuUs)}, ${fmt(ceiling.clientCpuUs)} µs`,
    }),
  ];
}

function printLoads(title: string, loads: Loads): void {
  console.log(`\n== ${title}, ${ROUNDS} x ${SLICE_S} s per target, interleaved`);
  console.log(
    'target   |   req/s |  p50 ms |  p99 ms | failures | CPU µs/request: server, Redis, load generator',
  );
  for (const kind of KINDS) {
    const l = loads[kind];
    if (!l) continue;
    console.log(
      `${kind.padEnd(8)} | ${fmt(l.reqPerS).padStart(7)} | ${fmt(l.p50).padStart(7)} | ${fmt(l.p99).padStart(7)} | ` +
        `${String(l.failures).padStart(8)} | ${fmt(l.serverCpuUs)}, ${fmt(l.redisCpuUs)}, ${fmt(l.clientCpuUs)}`,
    );
  }
  console.log(
    `replica/redis x${fmt(loads.replica.reqPerS / loads.redis.reqPerS)}, ` +
      `replica/ceiling x${fmt(loads.replica.reqPerS / loads.ceiling.reqPerS)}`,
  );
}

// ---------------------------------------------------------------- propagation

async function login(auth: Service, userId: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${auth.port}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  });
  if (res.status !== 200) throw new Error(`login: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

/** POST /logout on auth's keep-alive connection; resolves with its status and its round trip from `t0`. */
function logout(auth: Service, token: string, t0: bigint): Promise<{ status: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: auth.port,
        path: '/api/v1/auth/logout',
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        agent: auth.agent,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: elapsedMs(t0) }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function checkToken(instance: Service, token: string): Promise<{ status: number; body: string }> {
  return httpGet(instance.agent, instance.port, '/api/v1/some/resource', {
    authorization: `Bearer ${token}`,
  });
}

/** Back-to-back checks on the instance's one connection until it refuses; ms from `t0`. */
async function pollUntilRefused(instance: Service, token: string, t0: bigint): Promise<number> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const { status, body } = await checkToken(instance, token);
    if (status === 401) {
      if (!body.includes('token_revoked')) throw new Error(`${instance.child.name} refused with ${body}`);
      return elapsedMs(t0);
    }
    if (status !== 200) throw new Error(`${instance.child.name} answered ${status} ${body}`);
    if (Date.now() > deadline)
      throw new Error(`${instance.child.name} still allows a token 5 s after logout`);
    if (POLL_GAP_MS > 0) await sleepMs(POLL_GAP_MS);
  }
}

interface Propagation {
  /** Polled: logout sent -> the last instance answering 401. */
  polled: number[];
  /** Polled, every instance's own time, all logouts pooled. */
  polledEach: number[];
  /** The logout's round trip while every instance is being polled. */
  polledLogout: number[];
  /** Quiet: logout sent -> the event applied in the last instance (wall clocks, 1 ms resolution). */
  quiet: number[];
  quietEach: number[];
  /** publish -> applied in each instance (its lag_ms): the bus's share. */
  busLag: number[];
  /** The logout's round trip with nothing polling. */
  quietLogout: number[];
  /** An allowed check's round trip on the polling connections: the polling's resolution. */
  check: number[];
}

/** Logs in a new user and checks the token is allowed everywhere (its first check verifies the signature). */
async function loggedIn(
  auth: Service,
  fleet: Service[],
  user: string,
): Promise<{ token: string; checks: number[] }> {
  const token = await login(auth, user);
  const checks: number[] = [];
  for (let pass = 0; pass < 2; pass++) {
    for (const instance of fleet) {
      let t = nowNs();
      let res = await checkToken(instance, token);
      // A replica that could not prove itself current in time (a loaded machine): ask again, unmeasured.
      for (let i = 0; i < 5 && res.status !== 200 && res.body.includes('revocation_unavailable'); i++) {
        await sleepMs(200);
        t = nowNs();
        res = await checkToken(instance, token);
      }
      if (res.status !== 200) throw new Error(`a fresh token was refused: ${res.status} ${res.body}`);
      if (pass === 1) checks.push(elapsedMs(t));
    }
  }
  return { token, checks };
}

/** Logout while polling every instance back-to-back: ms from sending it to each instance's first 401. */
async function polledLogout(
  auth: Service,
  fleet: Service[],
  token: string,
): Promise<{ each: number[]; logoutMs: number }> {
  const t0 = nowNs();
  const loggedOut = logout(auth, token, t0);
  const each = await Promise.all(fleet.map((instance) => pollUntilRefused(instance, token, t0)));
  const { status, ms } = await loggedOut;
  if (status !== 204) throw new Error(`logout answered ${status}`);
  return { each, logoutMs: ms };
}

/**
 * Logout with nothing polling: once it has answered, each instance's
 * /replicas tells when it applied the event (last_event_at, its wall clock)
 * and the publish -> applied lag; then one check confirms it refuses.
 */
async function quietLogout(
  auth: Service,
  fleet: Service[],
  token: string,
): Promise<{ each: number[]; lag: number[]; logoutMs: number }> {
  const before = await Promise.all(fleet.map(replicaStats));
  const t0Wall = Date.now();
  const { status, ms } = await logout(auth, token, nowNs());
  if (status !== 204) throw new Error(`logout answered ${status}`);
  const each: number[] = [];
  const lag: number[] = [];
  for (const [j, instance] of fleet.entries()) {
    const applied = before[j]!.events_applied;
    const deadline = Date.now() + 5000;
    let stats = await replicaStats(instance);
    while (stats.events_applied === applied) {
      if (Date.now() > deadline) {
        throw new Error(`${instance.child.name} applied no event 5 s after logout: ${JSON.stringify(stats)}`);
      }
      await sleepMs(2);
      stats = await replicaStats(instance);
    }
    if (stats.events_applied !== applied + 1 || stats.last_event_at === null || stats.lag_ms === null) {
      throw new Error(
        `${instance.child.name}: expected exactly the logout's event, got ${JSON.stringify(stats)}`,
      );
    }
    each.push(Date.parse(stats.last_event_at) - t0Wall);
    lag.push(stats.lag_ms);
    const refused = await checkToken(instance, token);
    if (refused.status !== 401 || !refused.body.includes('token_revoked')) {
      throw new Error(
        `${instance.child.name} applied the logout but answered ${refused.status} ${refused.body}`,
      );
    }
  }
  return { each, lag, logoutMs: ms };
}

/** Per logout: one polled, then one quiet, so that machine noise hits both alike. */
async function measurePropagation(auth: Service, fleet: Service[], k: number): Promise<Propagation> {
  const out: Propagation = {
    polled: [],
    polledEach: [],
    polledLogout: [],
    quiet: [],
    quietEach: [],
    busLag: [],
    quietLogout: [],
    check: [],
  };
  for (let i = 0; i < LOGOUT_WARMUP + LOGOUTS; i++) {
    const a = await loggedIn(auth, fleet, `bench-${k}-${i}-polled`);
    const polled = await polledLogout(auth, fleet, a.token);
    const b = await loggedIn(auth, fleet, `bench-${k}-${i}-quiet`);
    const quiet = await quietLogout(auth, fleet, b.token);
    if (i < LOGOUT_WARMUP) continue;
    out.polled.push(Math.max(...polled.each));
    out.polledEach.push(...polled.each);
    out.polledLogout.push(polled.logoutMs);
    out.quiet.push(Math.max(...quiet.each));
    out.quietEach.push(...quiet.each);
    out.busLag.push(...quiet.lag);
    out.quietLogout.push(quiet.logoutMs);
    out.check.push(...a.checks, ...b.checks);
  }
  return out;
}

/** propagation.bench.ts's last in-process figures, if any (another run: a note, not a ratio). */
function propagationBenchNote(k: number): string {
  try {
    const result = JSON.parse(
      readFileSync(join(import.meta.dirname, 'results', 'propagation.json'), 'utf8'),
    ) as {
      date: string;
      rows: Row[];
    };
    const p50 = result.rows.find((r) => r.metric === `propagation p50, ${k} replicas`);
    return p50
      ? `; bench propagation (in-process replicas, no HTTP, its run of ${result.date.slice(0, 10)}): p50 ${fmt(p50.value)} ms`
      : '';
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- phases

/** The services a phase started, all stopped by the phase (or by main, on failure). */
class Fleet {
  readonly running: Service[] = [];

  async start(kind: 'ext-authz' | 'auth', name: string, env: NodeJS.ProcessEnv = {}): Promise<Service> {
    for (let attempt = 1; ; attempt++) {
      try {
        const service = await startService(kind, name, env);
        this.running.push(service);
        return service;
      } catch (err) {
        // freePort() lets its port go before the child binds it: another socket (an outgoing
        // connection's ephemeral port) can take it in between. New ports, then.
        if (attempt === 3 || !String(err).includes('EADDRINUSE')) throw err;
      }
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.running.splice(0).map(stopService));
  }
}

interface Tokens {
  allowed: IssuedToken;
  revoked: IssuedToken;
}

/**
 * Another client of the same Redis, looping a slow script until killed: what a
 * Redis shared with other services looks like from the check's side. Undefined
 * when redis-benchmark (Debian's redis-tools) is not installed.
 */
function busyRedis(): ChildProcess | undefined {
  if (spawnSync('redis-benchmark', ['--version'], { stdio: 'ignore' }).error) return undefined;
  const url = new URL(REDIS_URL);
  const child = spawn(
    'redis-benchmark',
    [
      ...['-h', url.hostname, '-p', url.port || '6379', '-c', String(BUSY_CLIENTS)],
      ...['-n', '1000000000', '-l', '-q', 'EVAL', BUSY_SCRIPT, '0'],
    ],
    { stdio: 'ignore' },
  );
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Median latency of EXISTS on a fresh connection, in ms: how long a check waits in Redis's queue. */
async function existsLatencyMs(samples = 200): Promise<number> {
  const client: RedisClient = createClient({ url: REDIS_URL });
  await client.connect();
  try {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t = nowNs();
      await client.exists('blacklist:probe');
      out.push(Number(nowNs() - t) / 1e6);
    }
    return percentile(out, 50);
  } finally {
    await client.close();
  }
}

async function throughputPhase(redis: RedisClient, fleet: Fleet, tokens: Tokens): Promise<Row[]> {
  const { allowed, revoked } = tokens;
  const ceilingPorts = {
    PORT: String(await freePort()),
    GRPC_PORT: String(await freePort()),
    HTTP2_PORT: String(await freePort()),
  };
  const ceiling = spawnNode('ceiling', [join(import.meta.dirname, 'authz-ceiling.ts')], {
    ...ceilingPorts,
    CEILING_SUB: 'bench-user',
    CEILING_JTI: allowed.jti,
  });
  try {
    const [replica, viaRedis] = await Promise.all([
      fleet.start('ext-authz', 'replica', { AUTHZ_BLACKLIST: 'replica' }),
      fleet.start('ext-authz', 'redis', { AUTHZ_BLACKLIST: 'redis' }),
      ceiling.line('ceiling running'),
    ]);
    const size = (await replicaStats(replica)).size;
    if (size !== REVOKED + 1) throw new Error(`replica holds ${size} jtis, expected ${REVOKED + 1}`);
    for (const instance of [replica, viaRedis]) {
      let ok = await checkToken(instance, allowed.token);
      // On a loaded machine redis mode's first EXISTS can miss its deadline (revocation_unavailable).
      for (let i = 0; i < 3 && ok.body.includes('revocation_unavailable'); i++) {
        await sleepMs(200);
        ok = await checkToken(instance, allowed.token);
      }
      const refused = await checkToken(instance, revoked.token);
      if (ok.status !== 200 || refused.status !== 401 || !refused.body.includes('token_revoked')) {
        throw new Error(
          `${instance.child.name}: allowed -> ${ok.status} ${ok.body}, revoked -> ${refused.status} ${refused.body}`,
        );
      }
    }
    const target = (service: Service): Target => ({
      name: service.child.name,
      pid: service.child.proc.pid!,
      port: service.port,
      grpcPort: service.grpcPort,
    });
    const targets: Record<Kind, Target> = {
      replica: target(replica),
      redis: target(viaRedis),
      ceiling: {
        name: 'ceiling',
        pid: ceiling.proc.pid!,
        port: Number(ceilingPorts.PORT),
        grpcPort: Number(ceilingPorts.GRPC_PORT),
      },
      http2: {
        name: 'node:http2',
        pid: ceiling.proc.pid!,
        port: 0,
        grpcPort: Number(ceilingPorts.HTTP2_PORT),
      },
    };
    if (PINNED) for (const kind of KINDS) pinToCore(targets[kind].pid, SERVER_CORE);
    const body = writeGrpcBody(envoyCheckRequest(allowed.token));
    const allowBytes = checkResponseFrame({ allow: true, sub: 'bench-user', jti: allowed.jti }).length;
    const denyBytes = checkResponseFrame({ allow: false, reason: 'revocation_unavailable' }).length;
    let both: Record<'HTTP' | 'gRPC', Loads>;
    try {
      both = await loadAll('throughput', targets, redis, {
        HTTP: (t) => httpDriver(t, allowed.token),
        gRPC: (t) => grpcDriver(t, body.file, allowBytes, denyBytes),
      });
    } finally {
      body.remove();
    }
    const { HTTP: http, gRPC: grpcLoads } = both;
    await assertLivePath(replica);
    printLoads(`HTTP/1.1, h2load, ${HTTP_LOAD}`, http);
    printLoads(`gRPC, h2load, ${GRPC_LOAD}`, grpcLoads);
    const ratio = (kind: Exclude<Kind, 'http2'>): number => grpcLoads[kind].reqPerS / http[kind].reqPerS;
    const nodeHttp2 = grpcLoads.http2!;
    console.log(
      `gRPC/HTTP req/s: replica x${fmt(ratio('replica'))}, redis x${fmt(ratio('redis'))}, ceiling x${fmt(ratio('ceiling'))}`,
    );
    const rows = [
      ...loadRows('HTTP', HTTP_LOAD, http, 'do-nothing node:http server'),
      ...loadRows('gRPC', GRPC_LOAD, grpcLoads, 'do-nothing gRPC server on src/http/h2'),
      row(
        `gRPC check, ${GRPC_LOAD}: time per request, replica mode, against node:http2`,
        1e6 / grpcLoads.replica.reqPerS,
        'µs',
        {
          baseline: { label: 'do-nothing gRPC server on node:http2', value: 1e6 / nodeHttp2.reqPerS },
          ceiling: { label: 'do-nothing gRPC server on src/http/h2', value: 1e6 / grpcLoads.ceiling.reqPerS },
          note:
            `CPU per request, server: replica ${fmt(grpcLoads.replica.serverCpuUs)} µs, node:http2 doing nothing ` +
            `${fmt(nodeHttp2.serverCpuUs)} µs; p99: replica ${fmt(grpcLoads.replica.p99)} ms, node:http2 ${fmt(nodeHttp2.p99)} ms`,
        },
      ),
      row('gRPC / HTTP check throughput (req/s), replica mode, same run', ratio('replica'), 'x', {
        headline: 'ext-authz gRPC / HTTP check throughput (goal >= 0.9)',
        note:
          `redis mode x${fmt(ratio('redis'))}; the do-nothing servers x${fmt(ratio('ceiling'))} ` +
          `(src/http/h2 / node:http); node:http2 doing nothing / our HTTP check x${fmt(nodeHttp2.reqPerS / http.replica.reqPerS)}; ` +
          `CPU per request, server, gRPC / HTTP: ` +
          `replica x${fmt(grpcLoads.replica.serverCpuUs / http.replica.serverCpuUs)}, ` +
          `ceiling x${fmt(grpcLoads.ceiling.serverCpuUs / http.ceiling.serverCpuUs)}`,
      }),
    ];

    const idleExistsMs = await existsLatencyMs();
    const busy = busyRedis();
    if (!busy) {
      console.log('redis-benchmark is not installed: no shared-Redis round');
      return rows;
    }
    try {
      await sleepMs(500);
      const busyExistsMs = await existsLatencyMs();
      const { HTTP: shared } = await loadAll('Redis shared', targets, redis, {
        HTTP: (t) => httpDriver(t, allowed.token),
      });
      printLoads(`HTTP with Redis kept busy by ${BUSY_CLIENTS} other connections`, shared);
      const us = (l: Load): number => 1e6 / l.reqPerS;
      const { replica: r, redis: d, ceiling: c } = shared;
      rows.push(
        row(
          `HTTP check, Redis shared with a busy client: time per request (1 / throughput), replica mode`,
          us(r),
          'µs',
          {
            baseline: { label: 'redis mode (EXISTS per check)', value: us(d) },
            ceiling: { label: 'do-nothing node:http server', value: us(c) },
            headline: `ext-authz HTTP check, Redis shared with a busy client: time per request`,
            note:
              `req/s: replica ${fmt(r.reqPerS)}, redis ${fmt(d.reqPerS)}, ceiling ${fmt(c.reqPerS)}` +
              (d.failures > 0 ? `; redis mode refused or failed ${d.failures} valid requests` : '') +
              `; an EXISTS on its own took p50 ${fmt(busyExistsMs)} ms (${fmt(idleExistsMs)} ms with Redis idle)`,
          },
        ),
        row(`HTTP check, Redis shared with a busy client: p99 latency, replica mode`, r.p99, 'ms', {
          baseline: { label: 'redis mode', value: d.p99 },
          ceiling: { label: 'do-nothing node:http server', value: c.p99 },
          note: `p50: replica ${fmt(r.p50)} ms, redis ${fmt(d.p50)} ms, ceiling ${fmt(c.p50)} ms`,
        }),
      );
      return rows;
    } finally {
      busy.kill('SIGKILL');
    }
  } finally {
    await fleet.stopAll();
    await stopChild(ceiling);
  }
}

async function propagationPhase(fleet: Fleet): Promise<Row[]> {
  const rows: Row[] = [];
  try {
    const auth = await fleet.start('auth', 'auth');
    const instances: Service[] = [];
    for (const k of FLEETS) {
      let t = nowNs();
      const added = await Promise.all(
        Array.from({ length: k - instances.length }, (_, i) =>
          fleet.start('ext-authz', `ext-authz-${instances.length + i + 1}`, { AUTHZ_BLACKLIST: 'replica' }),
        ),
      );
      instances.push(...added);
      console.log(
        `\n${k} ext-authz instances ready (${added.length} started in ${fmt(elapsedMs(t) / 1000)} s)`,
      );
      t = nowNs();
      const p = await measurePropagation(auth, instances, k);
      console.log(`${LOGOUT_WARMUP + LOGOUTS} logouts in ${fmt(elapsedMs(t) / 1000)} s`);
      for (const instance of instances) await assertLivePath(instance);
      for (const q of [50, 99]) {
        rows.push(
          row(
            `propagation p${q}, logout -> refused by all ${k} ext-authz instances, polled`,
            percentile(p.polled, q),
            'ms',
            {
              note:
                `per instance p${q} ${fmt(percentile(p.polledEach, q))} ms; the logout's own round trip meanwhile ` +
                `p${q} ${fmt(percentile(p.polledLogout, q))} ms (${fmt(percentile(p.quietLogout, q))} ms with nothing ` +
                `polling: the polling loads the machine); an allowed check's round trip p50 ${fmt(median(p.check))} ms`,
            },
          ),
        );
      }
      for (const q of [50, 99]) {
        rows.push(
          row(
            `propagation p${q}, logout -> applied in all ${k} ext-authz instances, nothing polling`,
            percentile(p.quiet, q),
            'ms',
            {
              note:
                `per instance p${q} ${fmt(percentile(p.quietEach, q))} ms, of which publish -> applied ` +
                `${fmt(percentile(p.busLag, q))} ms; the logout's round trip (Redis script + publish confirmed -> 204) ` +
                `p${q} ${fmt(percentile(p.quietLogout, q))} ms; times from the instances' wall clocks (1 ms resolution)` +
                (q === 50 ? propagationBenchNote(k) : ''),
            },
          ),
        );
      }
    }
  } finally {
    await fleet.stopAll();
  }
  printRows(`revocation propagation, ${LOGOUTS} logouts per fleet size`, rows);
  return rows;
}

async function readyPhase(redis: RedisClient, fleet: Fleet): Promise<Row[]> {
  const t = nowNs();
  const present = (await bareScan(redis, BLACKLIST_KEY_PREFIX, 5000)).seen;
  await loadExpiringKeys(redis, BLACKLIST_KEY_PREFIX, Math.max(0, READY_KEYS - present));
  console.log(
    `\nloaded ${Math.max(0, READY_KEYS - present)} more jtis in ${fmt(elapsedMs(t) / 1000)} s; dbsize ${await redis.dbSize()}`,
  );
  const best = { replica: Infinity, redis: Infinity, scan: Infinity, scanCount: 0 };
  let fastest: { service: Service; redisCpuMs: number } | undefined;
  let keys = 0;
  try {
    for (let round = 0; round < READY_ROUNDS; round++) {
      for (const count of SCAN_COUNTS) {
        const scan = await bareScan(redis, BLACKLIST_KEY_PREFIX, count);
        keys = scan.seen;
        console.log(`bare SCAN COUNT ${count}: ${fmt(scan.ms / 1000)} s (${scan.seen} keys)`);
        if (scan.ms < best.scan) Object.assign(best, { scan: scan.ms, scanCount: count });
      }
      const redisCpu = await redisCpuMs(redis);
      const replica = await fleet.start('ext-authz', 'replica-ready', { AUTHZ_BLACKLIST: 'replica' });
      const redisUsed = (await redisCpuMs(redis)) - redisCpu;
      const size = (await replicaStats(replica)).size;
      if (size < READY_KEYS) throw new Error(`replica loaded ${size} jtis, expected ${READY_KEYS}`);
      console.log(
        `replica mode: spawn -> ready ${fmt(replica.readyMs / 1000)} s, -> "running" line ` +
          `${fmt(replica.lineMs / 1000)} s (${size} jtis; CPU node ${fmt(replica.cpuMs / 1000)} s, ` +
          `redis ${fmt(redisUsed / 1000)} s)`,
      );
      if (replica.readyMs < best.replica) {
        best.replica = replica.readyMs;
        fastest = { service: replica, redisCpuMs: redisUsed };
      }
      await fleet.stopAll();
      const viaRedis = await fleet.start('ext-authz', 'redis-ready', { AUTHZ_BLACKLIST: 'redis' });
      console.log(`redis mode: spawn -> ready ${fmt(viaRedis.readyMs / 1000)} s`);
      best.redis = Math.min(best.redis, viaRedis.readyMs);
      await fleet.stopAll();
    }
  } finally {
    await fleet.stopAll();
  }
  const loadOnlyMs = best.replica - best.redis;
  const rows = [
    row(
      `time to ready, ${keys} revoked jtis in Redis (spawn -> /readyz 200), replica mode`,
      best.replica / 1000,
      's',
      {
        baseline: {
          label: 'redis mode, which loads nothing (the process start alone)',
          value: best.redis / 1000,
        },
        ceiling: { label: `bare SCAN COUNT ${best.scanCount}`, value: best.scan / 1000 },
        note:
          `-> the "running" line ${fmt(fastest!.service.lineMs / 1000)} s; the load alone (replica - redis mode) ` +
          `${fmt(loadOnlyMs / 1000)} s = x${fmt(loadOnlyMs / best.scan)} the bare SCAN; until ready the process ` +
          `used ${fmt(fastest!.service.cpuMs / 1000)} s CPU, redis ${fmt(fastest!.redisCpuMs / 1000)} s`,
      },
    ),
  ];
  printRows(`time to ready, best of ${READY_ROUNDS}`, rows);
  return rows;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  killChildrenOnExit();
  if (PHASES.includes('throughput') && !hasCommand('h2load')) {
    throw new Error(
      'h2load is not installed: bash scripts/ensure-services.sh --test-peers (apt-get install nghttp2-client)',
    );
  }
  if (['', '/', '/0', '/1'].includes(new URL(REDIS_URL).pathname)) {
    throw new Error(`refusing to FLUSHDB ${REDIS_URL}: DB 0 is the services' default and DB 1 the tests'`);
  }
  const redis: RedisClient = createClient({ url: REDIS_URL });
  redis.on('error', () => undefined);
  await redis.connect();
  const fleet = new Fleet();
  const rows: Row[] = [];
  try {
    await redis.flushDb();
    const jwt = loadJwtConfig({ JWT_SECRET });
    const issuer = createIssuer({
      secret: jwt.secret,
      issuer: jwt.issuer,
      audience: jwt.audience,
      ttlS: 3600,
    });
    const tokens: Tokens = { allowed: issuer.issue('bench-user'), revoked: issuer.issue('bench-revoked') };
    const t = nowNs();
    await loadExpiringKeys(redis, BLACKLIST_KEY_PREFIX, REVOKED);
    await redis.set(`${BLACKLIST_KEY_PREFIX}${tokens.revoked.jti}`, '1', {
      expiration: { type: 'EX', value: 3600 },
    });
    // As if each revocation had bumped the version (auth's script does): auth's next logout is version+1.
    await redis.set(BLACKLIST_VERSION_KEY, String(REVOKED + 1));
    // And an epoch begun on this Redis server, as auth's script leaves it: without one, auth's
    // first logout starts an epoch and every replica reloads all REVOKED keys, absorbing the
    // next logouts into that load instead of applying their events.
    const runId = /run_id:(\w+)/.exec(await redis.info('server'))?.[1];
    if (!runId) throw new Error('no run_id in INFO server');
    await redis.set(BLACKLIST_KEYS.epochKey, newEpoch());
    await redis.set(epochServerKey(BLACKLIST_KEYS), runId);
    console.log(`loaded ${REVOKED + 1} revoked jtis in ${fmt(elapsedMs(t) / 1000)} s`);

    if (PHASES.includes('throughput')) rows.push(...(await throughputPhase(redis, fleet, tokens)));
    if (PHASES.includes('propagation')) rows.push(...(await propagationPhase(fleet)));
    if (PHASES.includes('ready')) rows.push(...(await readyPhase(redis, fleet)));
  } finally {
    await fleet.stopAll().catch(() => undefined);
    await redis.flushDb();
    await redis.close();
  }

  printRows('ext-authz', rows);
  writeResult('authz', rows, [
    `Throughput: ${REVOKED + 1} revoked jtis in Redis DB 3; one allowed HS256 token on every request (the verifier's cache makes its signature check a Map hit, alike in both modes). Load generator: h2load (nghttp2-client); HTTP/1.1 with ${HTTP_LOAD}, no pipelining (Envoy's HTTP pool); gRPC with ${GRPC_LOAD}, every stream posting one CheckRequest as Envoy fills it (peers, time, 9 headers), grpc-timeout ${GRPC_TIMEOUT}, every answer checked to be the allow CheckResponse by its bytes. ${PINNED ? `Servers pinned to core ${SERVER_CORE}, h2load to core ${GENERATOR_CORE} (taskset); the other helpers' processes still share both cores` : 'Not pinned (no taskset or 1 core)'}. ${WARMUP_S} s warm-up per target and transport, then ${ROUNDS} rounds of a ${SLICE_S} s slice per target and transport (HTTP and gRPC interleaved in the same run), the order rotating, each one's slices pooled; latencies are every allowed answer's (h2load --log-file, µs). CPU per request: the server process (/proc), Redis (INFO cpu) and h2load (its rusage), over the measured slices only.`,
    `Redis shared: redis-benchmark keeps ${BUSY_CLIENTS} connections looping a Lua script of ~0.5 ms (a busy Redis shared with other services, as in seed 001), then the same HTTP rounds. Redis's single thread serves the checks' EXISTS between the scripts; its core is taken, so every target, the ceiling included, has less CPU than in the idle rounds.`,
    'Every server is a child process (`cachecast serve ext-authz` run from src/ through tsx, LOG_LEVEL=warn; the ceiling: bench/authz-ceiling.ts); h2load and Redis run on the same 2-core machine: the ceiling (a do-nothing server answering the same bytes) shows what the machine and the load generator allow.',
    `Propagation: 1 auth + K ext-authz child processes (replica mode) on RabbitMQ; per logout (${LOGOUTS}, after ${LOGOUT_WARMUP} warm-up): log in, check allowed on each instance, POST /logout and at once poll every instance (${POLL_GAP_MS > 0 ? `a check every ${POLL_GAP_MS} ms` : 'back-to-back checks'} on one keep-alive connection each) until it answers 401 token_revoked; the figure is logout sent -> the last instance refusing.`,
    `Time to ready: ${READY_KEYS} blacklist:<uuid> keys with EX 600-3600 s; spawn -> /readyz 200 polled every ${READY_POLL_MS} ms; best of ${READY_ROUNDS}, interleaved with the bare SCANs (COUNT ${SCAN_COUNTS.join(' and ')}).`,
  ]);
}

await main();
