import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { describeError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { redactUrl } from '../util/redact.ts';
import { StackActions } from './actions.ts';
import { BrokerProxies } from './broker-proxy.ts';
import type { BrokerLinkView } from './broker-proxy.ts';
import { BusMonitor } from './bus-monitor.ts';
import { CeleryClient } from './celery-client.ts';
import type { StackConfig, StackOptions, StackProcessSpec } from './config.ts';
import { checkPortsFree, isLoopbackHost, listPorts, loadStackConfig, processUrls } from './config.ts';
import type { ActivityLine } from './dashboard-server.ts';
import { DashboardServer } from './dashboard-server.ts';
import type { Decision, ProbeView, ReplicaView } from './monitor.ts';
import { StatusMonitor } from './monitor.ts';
import { PAGE_HTML } from './page.ts';
import { setupDatabase } from './setup.ts';
import type { ChildExit, ChildSpec, ChildView } from './supervisor.ts';
import { describeExit, Supervisor } from './supervisor.ts';

/** The package root (where bin/ and data/ are), from src/stack or dist/stack. */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(PACKAGE_ROOT, 'bin', 'cachecast.js');
/** Preloaded into each child: it stops itself if the stack dies without stopping it. */
const WATCHDOG = join(PACKAGE_ROOT, 'dist', 'stack', 'parent-watchdog.js');

/**
 * What the dashboard shows of a process: `starting` (spawned, admin port not
 * answering yet), `syncing` (answering, not ready), `ready`, `degraded` (a
 * replica lost the bus or fell behind), `crashed` (exited; restarting after a
 * backoff), `unavailable` (not in this build), `stopping`, `stopped`.
 */
export type ProcessStatus =
  'starting' | 'syncing' | 'ready' | 'degraded' | 'crashed' | 'unavailable' | 'stopping' | 'stopped';

export interface ProcessSnapshot {
  id: string;
  service: string;
  status: ProcessStatus;
  pid: number | null;
  restarts: number;
  started_at: number | null;
  last_exit: (ChildExit & { description: string }) | null;
  restart_at: number | null;
  urls: { http: string | null; admin: string; grpc: string | null };
  broker: BrokerLinkView | null;
  /** The admin port answered the last poll. */
  admin_reachable: boolean;
  replicas: ReplicaView[];
  /** ext-authz: decision counts; null while its admin port has no /decisions. */
  decisions: Record<string, number> | null;
  /** match-worker: task counts. */
  worker: Record<string, unknown> | null;
  /** Why it is down, when it is (stderr tail, probe error). */
  problem: string | null;
  last_log: { at: number; level: string; msg: string } | null;
}

export interface StackSnapshot {
  started_at: number;
  dashboard: string;
  bus_connected: boolean;
  ready: number;
  total: number;
  processes: ProcessSnapshot[];
  /** The ext-authz instances' recent decisions, newest first. */
  decisions: Array<Decision & { instance: string }>;
  stopping: boolean;
}

export interface StartStackOptions extends StackOptions {
  env?: NodeJS.ProcessEnv;
  /** The terminal: one line at a time. @default stdout */
  out?: (line: string) => void;
  /** Print every child log line (default: warnings and errors only). */
  verbose?: boolean;
  /** Overrides for tests. */
  supervisor?: { restartBaseMs?: number; stopTimeoutMs?: number };
}

export interface RunningStack {
  readonly config: StackConfig;
  readonly dashboardUrl: string;
  /** Resolves the first time every available process is ready. */
  readonly ready: Promise<void>;
  snapshot(): StackSnapshot;
  /** SIGTERM to every child, wait for them, close everything. Idempotent. */
  close(): Promise<void>;
  /** SIGKILL to every child now (a second Ctrl-C). */
  kill(): void;
}

const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/**
 * `cachecast stack`: migrations, the sample catalog when the database has
 * none, then auth, two ext-authz, catalog and two match workers as separate
 * processes (each behind its own broker proxy), supervised, and the dashboard.
 */
export async function startStack(options: StartStackOptions = {}): Promise<RunningStack> {
  const env = options.env ?? process.env;
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const config = loadStackConfig(env, options);
  await checkPortsFree(config);
  const startedAt = Date.now();
  const closers: Array<[string, () => Promise<void>]> = [];
  const closeAll = async (): Promise<void> => {
    for (const [name, close] of closers.splice(0)) {
      try {
        await close();
      } catch (err) {
        out(`stack: closing ${name} failed: ${describeError(err)}`);
      }
    }
  };

  try {
    // ------------------------------------------------------------ database
    const pool = new pg.Pool({ connectionString: config.common.databaseUrl, max: 3 });
    pool.on('error', () => undefined);
    closers.push(['database pool', () => pool.end()]);
    const setup = await setupDatabase(pool);
    out(
      `database ${redactUrl(config.common.databaseUrl)}: ${
        setup.migrations.length ? `applied migrations ${setup.migrations.join(', ')}` : 'schema up to date'
      }; catalog: ${setup.imported ? `imported the sample (${setup.characters} characters)` : `${setup.characters} characters`}`,
    );

    // ------------------------------------------------------------ activity log
    const activity: ActivityLine[] = [];
    let seq = 0;
    let dashboard: DashboardServer | undefined = undefined;
    const report = (level: ActivityLine['level'], message: string): void => {
      const line: ActivityLine = { seq: ++seq, at: Date.now(), level, message };
      activity.push(line);
      if (activity.length > 200) activity.shift();
      out(`${clock(line.at)} ${level === 'info' ? '' : `${level.toUpperCase()} `}${message}`);
      dashboard?.broadcast('activity', line);
    };

    // ------------------------------------------------------------ children
    const proxies = new BrokerProxies(
      config.common.rabbitmqUrl,
      listPorts(config).map(([, port]) => port),
    );
    closers.unshift(['broker proxies', () => proxies.close()]);
    const specs: ChildSpec[] = [];
    for (const p of config.processes) {
      specs.push({
        id: p.id,
        command: process.execPath,
        args: [
          ...(existsSync(WATCHDOG) ? ['--import', pathToFileURL(WATCHDOG).href] : []),
          BIN,
          'serve',
          p.service,
        ],
        cwd: PACKAGE_ROOT,
        env: childEnv(env, config, p, await proxies.add(p.id)),
      });
    }
    const lastLogs = new Map<string, { at: number; level: string; msg: string }>();
    const supervisor = new Supervisor(specs, {
      stopTimeoutMs: config.stopTimeoutMs,
      ...options.supervisor,
      onEvent: (event) => {
        switch (event.type) {
          case 'spawned':
            if (event.restarts > 0)
              report('info', `${event.id}: restarted (pid ${event.pid}, restart #${event.restarts})`);
            break;
          case 'crashed':
            report(
              'error',
              `${event.id} (pid ${event.exit.pid}) ${event.reason}; restarting in ${((event.restartInMs ?? 0) / 1000).toFixed(1)} s`,
            );
            break;
          case 'unavailable':
            report('warn', `${event.id}: ${event.reason}; not restarted`);
            break;
          case 'stopped':
            if (event.exit) {
              report(
                event.forced ? 'warn' : 'info',
                `${event.id} stopped (${describeExit(event.exit)}${event.forced ? ', after SIGKILL: it did not drain in time' : ''})`,
              );
            }
            break;
        }
        dashboard?.pushState();
      },
      onOutput: (id, stream, line) => {
        const log = parseLogLine(line);
        if (log) lastLogs.set(id, log);
        const loud =
          stream === 'stderr' ||
          (log ? log.level !== 'info' && log.level !== 'debug' && log.level !== 'trace' : true);
        if (options.verbose || loud) {
          out(
            log
              ? `${clock(log.at)} [${id}] ${log.level === 'info' ? '' : `${log.level.toUpperCase()} `}${log.msg}`
              : `[${id}] ${line}`,
          );
        }
      },
    });
    // Closed first of all: children drain while the broker proxies still forward.
    closers.unshift(['processes', () => supervisor.stop()]);

    // ------------------------------------------------------------ observers
    const monitor = new StatusMonitor({
      host: config.host,
      adminPortToken: config.adminPortToken,
      processes: config.processes,
      isRunning: (id) => supervisor.view(id)?.state === 'running',
      onPoll: () => onPoll(),
    });
    closers.unshift(['monitor', () => monitor.close()]);
    const busMonitor = new BusMonitor({
      rabbitmqUrl: config.common.rabbitmqUrl,
      logger: createLogger({ level: 'silent' }),
    });
    closers.push(['dashboard bus', () => busMonitor.close()]);
    const celery = new CeleryClient({
      rabbitmqUrl: config.common.rabbitmqUrl,
      redisUrl: config.common.redisUrl,
    });
    closers.push(['celery client', () => celery.close()]);
    const actions = new StackActions({ config, supervisor, proxies, pool, celery, report });

    let stopping = false;
    const dashboardUrl = `http://${config.host}:${config.dashboardPort}`;
    const snapshot = (): StackSnapshot => {
      const processes = config.processes.map((p) =>
        processSnapshot(
          config,
          p,
          supervisor.view(p.id)!,
          monitor.view(p.id),
          proxies.view(p.id),
          lastLogs.get(p.id),
        ),
      );
      const decisions: Array<Decision & { instance: string }> = [];
      for (const p of config.processes) {
        for (const d of monitor.view(p.id).decisions?.recent ?? []) decisions.push({ ...d, instance: p.id });
      }
      decisions.sort((a, b) => b.at - a.at);
      return {
        started_at: startedAt,
        dashboard: dashboardUrl,
        bus_connected: busMonitor.connected,
        ready: processes.filter((p) => p.status === 'ready').length,
        total: processes.filter((p) => p.status !== 'unavailable').length,
        processes,
        decisions: decisions.slice(0, 40),
        stopping,
      };
    };

    dashboard = new DashboardServer({
      page: PAGE_HTML,
      snapshot,
      history: () => ({ bus: busMonitor.recent(), activity: [...activity] }),
      actions,
      token: config.dashboardToken,
      loopback: isLoopbackHost(config.host),
    });
    const server = dashboard;
    closers.push(['dashboard', () => server.close()]);
    busMonitor.onEvent((event) => server.broadcast('bus', event));
    await server.listen(config.dashboardPort, config.host);

    // Status transitions go to the activity log (degraded, back to ready...).
    const lastStatus = new Map<string, ProcessStatus>();
    let resolveReady!: () => void;
    const ready = new Promise<void>((resolve) => (resolveReady = resolve));
    let allReady = false;
    function onPoll(): void {
      const snap = snapshot();
      for (const p of snap.processes) {
        const before = lastStatus.get(p.id);
        lastStatus.set(p.id, p.status);
        if (before === undefined || before === p.status) continue;
        // Degraded and back; ready again after a restart. Crashes are the supervisor's to report.
        const interesting =
          p.status === 'degraded' || before === 'degraded' || (p.status === 'ready' && p.restarts > 0);
        if (interesting && !snap.stopping) {
          const detail = p.replicas.map((r) => `${r.dataset} ${r.state} v${r.version}`).join(', ');
          report(
            p.status === 'degraded' ? 'warn' : 'info',
            `${p.id}: ${before} -> ${p.status}${detail ? ` (${detail})` : ''}`,
          );
        }
      }
      if (!allReady && snap.total > 0 && snap.ready === snap.total) {
        allReady = true;
        report(
          'info',
          `all ${snap.total} processes ready after ${((Date.now() - startedAt) / 1000).toFixed(1)} s; dashboard ${dashboardUrl}`,
        );
        resolveReady();
      }
      server.pushState();
    }

    void busMonitor
      .start()
      .catch((err: unknown) => report('warn', `dashboard bus subscription failed: ${describeError(err)}`));
    supervisor.start();
    monitor.start();
    out(table(config, supervisor.views(), proxies, dashboardUrl));
    if (!isLoopbackHost(config.host)) {
      report(
        'warn',
        `STACK_HOST ${config.host} is not a loopback address: every port of the stack (auth's development ` +
          'login included) is reachable from the network; the dashboard answers only with its token',
      );
    }

    let closing: Promise<void> | undefined;
    return {
      config,
      dashboardUrl,
      ready,
      snapshot,
      kill() {
        for (const id of supervisor.ids) supervisor.kill(id, 'SIGKILL');
      },
      close() {
        closing ??= (async () => {
          stopping = true;
          report(
            'info',
            `stopping: SIGTERM to ${supervisor.views().filter((v) => v.state === 'running').length} processes, waiting for them to drain`,
          );
          server.pushState();
          await closeAll();
          out('stack stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function childEnv(
  env: NodeJS.ProcessEnv,
  config: StackConfig,
  p: StackProcessSpec,
  rabbitmqUrl: string,
): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('STACK_') || key === 'PORT' || key === 'ADMIN_PORT' || key === 'GRPC_PORT') continue;
    out[key] = value;
  }
  Object.assign(out, {
    HOST: config.host,
    ADMIN_PORT: String(p.adminPort),
    RABBITMQ_URL: rabbitmqUrl,
    REDIS_URL: config.common.redisUrl,
    DATABASE_URL: config.common.databaseUrl,
    ADMIN_TOKEN: config.adminToken,
    ADMIN_PORT_TOKEN: config.adminPortToken,
    CACHE_EVENT_SECRET: config.eventSecret,
    JWT_SECRET: config.jwtSecret,
    LOG_LEVEL: config.childLogLevel,
  });
  if (p.port !== undefined) out.PORT = String(p.port);
  if (p.grpcPort !== undefined) out.GRPC_PORT = String(p.grpcPort);
  return out;
}

function processSnapshot(
  config: StackConfig,
  p: StackProcessSpec,
  child: ChildView,
  probe: ProbeView,
  broker: BrokerLinkView | null,
  lastLog: ProcessSnapshot['last_log'] | undefined,
): ProcessSnapshot {
  const urls = processUrls(config.host, p);
  const status = processStatus(child, probe);
  let problem: string | null = null;
  if (status === 'crashed' || status === 'unavailable')
    problem = child.stderr_tail.slice(-3).join('\n') || null;
  else if (status === 'starting' && probe.error && child.started_at && Date.now() - child.started_at > 5000) {
    problem = `admin port: ${probe.error}`;
  }
  return {
    id: p.id,
    service: p.service,
    status,
    pid: child.pid ?? null,
    restarts: child.restarts,
    started_at: child.started_at,
    last_exit: child.last_exit ? { ...child.last_exit, description: describeExit(child.last_exit) } : null,
    restart_at: child.restart_at,
    urls: { http: urls.http ?? null, admin: urls.admin, grpc: urls.grpc ?? null },
    broker,
    admin_reachable: probe.reachable,
    replicas: probe.replicas.map((r) => ({
      dataset: r.dataset,
      state: r.state,
      version: r.version,
      size: r.size,
      last_event_at: r.last_event_at,
      lag_ms: r.lag_ms,
      bus_connected: r.bus_connected,
      resyncs: r.resyncs,
      last_resync_reason: r.last_resync_reason,
    })),
    decisions: probe.decisions?.counts ?? null,
    worker: probe.worker,
    problem,
    last_log: lastLog ?? null,
  };
}

export function processStatus(child: ChildView, probe: ProbeView): ProcessStatus {
  switch (child.state) {
    case 'restarting':
      return 'crashed';
    case 'unavailable':
      return 'unavailable';
    case 'stopping':
      return 'stopping';
    case 'stopped':
      return 'stopped';
    case 'running':
      if (!probe.reachable) return 'starting';
      if (probe.replicas.some((r) => r.state === 'degraded')) return 'degraded';
      return probe.ready ? 'ready' : 'syncing';
  }
}

function parseLogLine(line: string): { at: number; level: string; msg: string } | null {
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

function clock(at: number): string {
  return new Date(at).toISOString().slice(11, 23);
}

/**
 * How to open the dashboard when the address alone is not enough: off loopback
 * every request needs the token. A generated one is printed (it lives as long
 * as this run); one given in STACK_DASHBOARD_TOKEN never is.
 */
function dashboardAccess(config: StackConfig): string {
  if (isLoopbackHost(config.host)) return '';
  return config.dashboardTokenGiven ? '/?token=<STACK_DASHBOARD_TOKEN>' : `/?token=${config.dashboardToken}`;
}

/** The table `cachecast stack` prints at start: what runs where. */
export function table(
  config: StackConfig,
  children: ChildView[],
  proxies: BrokerProxies,
  dashboardUrl: string,
): string {
  const rows: string[][] = [['process', 'pid', 'http', 'admin', 'grpc', 'broker via']];
  for (const p of config.processes) {
    const urls = processUrls(config.host, p);
    const child = children.find((c) => c.id === p.id);
    const proxy = proxies.view(p.id);
    rows.push([
      p.id,
      String(child?.pid ?? '-'),
      urls.http ?? '-',
      urls.admin,
      urls.grpc ?? '-',
      proxy ? `127.0.0.1:${proxy.port}` : 'direct',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => `  ${r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`.trimEnd());
  return [
    '',
    'cachecast stack',
    lines[0]!,
    ...lines.slice(1),
    '',
    `  dashboard  ${dashboardUrl}${dashboardAccess(config)}`,
    `  broker     ${redactUrl(config.common.rabbitmqUrl)}  redis ${redactUrl(config.common.redisUrl)}  database ${redactUrl(config.common.databaseUrl)}`,
    '  Ctrl-C stops every process (SIGTERM, drain, exit)',
    '',
  ].join('\n');
}
