import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import type { CommonConfig } from '../config/env.ts';
import { intVar, loadCommonConfig, matchQueueType, secretVar } from '../config/env.ts';
import type { QueueType } from '../amqp/queue-type.ts';
import { CachecastError } from '../errors.ts';

/** The services `cachecast stack` runs (`cachecast serve <service>`). */
export type StackService = 'auth' | 'ext-authz' | 'catalog' | 'match-worker';

/** One child process of the stack and where it listens. */
export interface StackProcessSpec {
  /** Unique in the stack: `auth`, `ext-authz-1`, `ext-authz-2`, `catalog`, `match-worker-1`, ... */
  id: string;
  service: StackService;
  /** Public HTTP port (none for the match worker). */
  port: number | undefined;
  adminPort: number;
  /** ext-authz's gRPC port. */
  grpcPort: number | undefined;
}

export interface StackConfig {
  common: CommonConfig;
  /** MATCH_QUEUE_TYPE: how the dashboard's Celery client declares `character.match` (children read it too). */
  matchQueueType: QueueType;
  /** Where every port of the stack binds (children get it as HOST). */
  host: string;
  dashboardPort: number;
  processes: StackProcessSpec[];
  /** Generated per run unless set: shared by auth and ext-authz. */
  jwtSecret: string;
  /** Generated per run unless set: the catalog admin API's bearer token. */
  adminToken: string;
  /** CACHE_EVENT_SECRET, generated per run unless set: every child signs and requires signed events. */
  eventSecret: string;
  /** Generated per run unless set: the children's admin-port detail routes (/decisions, /worker). */
  adminPortToken: string;
  /**
   * STACK_DASHBOARD_TOKEN, else generated per run: opens the dashboard to
   * clients that are not a same-origin page on the loopback address (curl,
   * scripts), and is required for everything when `host` is not loopback.
   */
  dashboardToken: string;
  /** True when STACK_DASHBOARD_TOKEN was given (then it is never printed). */
  dashboardTokenGiven: boolean;
  /** LOG_LEVEL passed to the children. */
  childLogLevel: string;
  /** How long a broker disconnect from the dashboard lasts (STACK_DISCONNECT_MS). */
  disconnectMs: number;
  /** How long a child may drain after SIGTERM before it is killed (STACK_STOP_TIMEOUT_MS). */
  stopTimeoutMs: number;
}

export interface StackOptions {
  /** Added to every default port (CONTRACT.md's, the dashboard's 8000 included). @default 0 */
  portOffset?: number;
}

/**
 * Default ports: CONTRACT.md's for the first instance of each service, +10
 * (gRPC +1) for the second. The dashboard is 8000.
 */
const LAYOUT: ReadonlyArray<Omit<StackProcessSpec, 'port' | 'adminPort' | 'grpcPort'> & Defaults> = [
  { id: 'auth', service: 'auth', port: 8001, adminPort: 9001 },
  { id: 'ext-authz-1', service: 'ext-authz', port: 8002, adminPort: 9002, grpcPort: 9191 },
  { id: 'ext-authz-2', service: 'ext-authz', port: 8012, adminPort: 9012, grpcPort: 9192 },
  { id: 'catalog', service: 'catalog', port: 8003, adminPort: 9003 },
  { id: 'match-worker-1', service: 'match-worker', adminPort: 9004 },
  { id: 'match-worker-2', service: 'match-worker', adminPort: 9014 },
];

interface Defaults {
  port?: number;
  adminPort: number;
  grpcPort?: number;
}

export const DEFAULT_DASHBOARD_PORT = 8000;

/** `ext-authz-2` + `ADMIN_PORT` -> `STACK_EXT_AUTHZ_2_ADMIN_PORT`. */
export function portVariable(id: string, kind: 'PORT' | 'ADMIN_PORT' | 'GRPC_PORT'): string {
  return `STACK_${id.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_${kind}`;
}

/**
 * The stack's configuration: the shared environment (RABBITMQ_URL, REDIS_URL,
 * DATABASE_URL, ...), the ports (each default + `portOffset`, or
 * `STACK_PORT_OFFSET`; any single one set by `STACK_<PROCESS>_<KIND>`, e.g.
 * `STACK_DASHBOARD_PORT`, `STACK_CATALOG_ADMIN_PORT`), and the secrets.
 */
export function loadStackConfig(env: NodeJS.ProcessEnv, options: StackOptions = {}): StackConfig {
  const common = loadCommonConfig(env);
  const offset = options.portOffset ?? intVar(env, 'STACK_PORT_OFFSET', 0, 0, 50_000);
  if (!Number.isInteger(offset) || offset < 0 || offset > 50_000) {
    throw new CachecastError('CONFIG_INVALID', 'the port offset must be an integer from 0 to 50000');
  }
  const port = (name: string, fallback: number): number => {
    const value = intVar(env, name, fallback + offset, 1, 65_535);
    if (value > 65_535) throw new CachecastError('CONFIG_INVALID', `${name} would be ${value}, above 65535`);
    return value;
  };
  const processes = LAYOUT.map((p): StackProcessSpec => ({
    id: p.id,
    service: p.service,
    port: p.port === undefined ? undefined : port(portVariable(p.id, 'PORT'), p.port),
    adminPort: port(portVariable(p.id, 'ADMIN_PORT'), p.adminPort),
    grpcPort: p.grpcPort === undefined ? undefined : port(portVariable(p.id, 'GRPC_PORT'), p.grpcPort),
  }));
  const givenDashboardToken = secretVar(env, 'STACK_DASHBOARD_TOKEN', 16);
  const config: StackConfig = {
    common,
    matchQueueType: matchQueueType(env),
    host: env.STACK_HOST?.trim() || '127.0.0.1',
    dashboardPort: port('STACK_DASHBOARD_PORT', DEFAULT_DASHBOARD_PORT),
    processes,
    jwtSecret: secretVar(env, 'JWT_SECRET', 32) ?? randomBytes(32).toString('base64url'),
    adminToken: secretVar(env, 'ADMIN_TOKEN', 16) ?? randomBytes(24).toString('base64url'),
    adminPortToken: common.adminPortToken ?? randomBytes(24).toString('base64url'),
    eventSecret: common.eventSecret ?? randomBytes(24).toString('base64url'),
    dashboardToken: givenDashboardToken ?? randomBytes(24).toString('base64url'),
    dashboardTokenGiven: givenDashboardToken !== undefined,
    childLogLevel: env.LOG_LEVEL?.trim() || 'info',
    disconnectMs: intVar(env, 'STACK_DISCONNECT_MS', 5000, 100, 600_000),
    stopTimeoutMs: intVar(env, 'STACK_STOP_TIMEOUT_MS', 15_000, 0, 600_000),
  };
  const seen = new Map<number, string>();
  for (const [owner, p] of listPorts(config)) {
    const other = seen.get(p);
    if (other) throw new CachecastError('CONFIG_INVALID', `port ${p} is given to both ${other} and ${owner}`);
    seen.set(p, owner);
  }
  return config;
}

/** Whether `host` is a loopback address: only this machine can reach what binds it. */
export function isLoopbackHost(host: string): boolean {
  const name = host.replace(/^\[|\]$/g, '').toLowerCase();
  return name === 'localhost' || name === '::1' || /^127(\.\d{1,3}){3}$/.test(name);
}

/** Every port the stack binds, with what binds it ("catalog admin"). */
export function listPorts(config: StackConfig): Array<[string, number]> {
  const out: Array<[string, number]> = [['dashboard', config.dashboardPort]];
  for (const p of config.processes) {
    if (p.port !== undefined) out.push([`${p.id} http`, p.port]);
    out.push([`${p.id} admin`, p.adminPort]);
    if (p.grpcPort !== undefined) out.push([`${p.id} grpc`, p.grpcPort]);
  }
  return out;
}

/** Fails with one line naming the first port of the stack that something else holds. */
export async function checkPortsFree(config: StackConfig): Promise<void> {
  for (const [owner, port] of listPorts(config)) {
    if (!(await portFree(port, config.host))) {
      throw new CachecastError(
        'CONFIG_INVALID',
        `port ${port} (${owner}) is in use on ${config.host}: is another stack running? ` +
          'Stop it, or move this one with --port-offset <n> (or STACK_PORT_OFFSET)',
      );
    }
  }
}

export function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The URLs of a process, for the table and the dashboard. */
export function processUrls(
  host: string,
  p: StackProcessSpec,
): { http: string | undefined; admin: string; grpc: string | undefined } {
  return {
    http: p.port === undefined ? undefined : `http://${host}:${p.port}`,
    admin: `http://${host}:${p.adminPort}`,
    grpc: p.grpcPort === undefined ? undefined : `${host}:${p.grpcPort}`,
  };
}
