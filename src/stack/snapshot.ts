import type { BrokerLinkView, BrokerProxies } from './broker-proxy.ts';
import type { BusMonitor } from './bus-monitor.ts';
import type { LogLine } from './child-output.ts';
import type { StackConfig, StackProcessSpec } from './config.ts';
import { processUrls } from './config.ts';
import type { Decision, ProbeView, ReplicaView, StatusMonitor } from './monitor.ts';
import type { ChildExit, ChildView, Supervisor } from './supervisor.ts';
import { describeExit } from './supervisor.ts';

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
  last_log: LogLine | null;
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

/** What a stack snapshot is read from. */
export interface SnapshotSources {
  config: StackConfig;
  startedAt: number;
  dashboardUrl: string;
  supervisor: Supervisor;
  monitor: StatusMonitor;
  proxies: BrokerProxies;
  busMonitor: BusMonitor;
  lastLog: (id: string) => LogLine | undefined;
  stopping: () => boolean;
}

/** The whole stack as the dashboard shows it, now. */
export function stackSnapshot(s: SnapshotSources): StackSnapshot {
  const { config, monitor } = s;
  const processes = config.processes.map((p) =>
    processSnapshot(
      config,
      p,
      s.supervisor.view(p.id)!,
      monitor.view(p.id),
      s.proxies.view(p.id),
      s.lastLog(p.id),
    ),
  );
  const decisions: Array<Decision & { instance: string }> = [];
  for (const p of config.processes) {
    for (const d of monitor.view(p.id).decisions?.recent ?? []) decisions.push({ ...d, instance: p.id });
  }
  decisions.sort((a, b) => b.at - a.at);
  return {
    started_at: s.startedAt,
    dashboard: s.dashboardUrl,
    bus_connected: s.busMonitor.connected,
    ready: processes.filter((p) => p.status === 'ready').length,
    total: processes.filter((p) => p.status !== 'unavailable').length,
    processes,
    decisions: decisions.slice(0, 40),
    stopping: s.stopping(),
  };
}

function processSnapshot(
  config: StackConfig,
  p: StackProcessSpec,
  child: ChildView,
  probe: ProbeView,
  broker: BrokerLinkView | null,
  lastLog: LogLine | undefined,
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
