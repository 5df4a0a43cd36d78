import pg from 'pg';
import { describeError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { Lifecycle } from '../util/lifecycle.ts';
import { redactUrl } from '../util/redact.ts';
import { StackActions } from './actions/stack-actions.ts';
import { ActivityLog } from './activity.ts';
import { BrokerProxies } from './broker-proxy.ts';
import { BusMonitor } from './bus-monitor.ts';
import { CeleryClient } from './celery-client.ts';
import { ChildOutput } from './child-output.ts';
import { childSpecs, reportChildEvent } from './children.ts';
import type { StackConfig, StackOptions } from './config.ts';
import { checkPortsFree, isLoopbackHost, listPorts, loadStackConfig } from './config.ts';
import { DashboardServer } from './dashboard-server.ts';
import { StatusMonitor } from './monitor.ts';
import { loadPage } from './page.ts';
import { Readiness } from './readiness.ts';
import { setupDatabase } from './setup.ts';
import type { StackSnapshot } from './snapshot.ts';
import { stackSnapshot } from './snapshot.ts';
import { table } from './start-table.ts';
import { Supervisor } from './supervisor.ts';

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

/** What the processes' close may take beyond their own drain deadline (SIGKILL, then their exit). */
const STOP_MARGIN_MS = 30_000;

/**
 * `cachecast stack`: migrations, the sample catalog when the database has
 * none, then auth, two ext-authz, catalog and two match workers as separate
 * processes (each behind its own broker proxy), supervised, and the dashboard.
 *
 * Its parts close in reverse of their start: the status monitor, the
 * processes (they drain while their broker proxies still forward), the
 * proxies, the database pool; the dashboard and what feeds it (the bus
 * monitor, the Celery client) outlast them all, so the page shows the drain.
 */
export async function startStack(options: StartStackOptions = {}): Promise<RunningStack> {
  const env = options.env ?? process.env;
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const config = loadStackConfig(env, options);
  const page = loadPage();
  await checkPortsFree(config);
  const startedAt = Date.now();
  const parts = new Lifecycle({
    onCloseError: (part, err) => out(`stack: closing ${part} failed: ${describeError(err)}`),
  });

  try {
    const pool = new pg.Pool({ connectionString: config.common.databaseUrl, max: 3 });
    pool.on('error', () => undefined);
    parts.add('database pool', () => pool.end());
    const setup = await setupDatabase(pool);
    out(
      `database ${redactUrl(config.common.databaseUrl)}: ${
        setup.migrations.length ? `applied migrations ${setup.migrations.join(', ')}` : 'schema up to date'
      }; catalog: ${setup.imported ? `imported the sample (${setup.characters} characters)` : `${setup.characters} characters`}`,
    );

    let dashboard: DashboardServer | undefined = undefined;
    parts.addOuter('dashboard', () => dashboard?.close() ?? Promise.resolve());
    const activity = new ActivityLog(out);
    activity.onLine = (line) => dashboard?.broadcast('activity', line);
    const report = activity.report;

    const proxies = new BrokerProxies(
      config.common.rabbitmqUrl,
      listPorts(config).map(([, port]) => port),
    );
    parts.add('broker proxies', () => proxies.close());
    const specs = await childSpecs(env, config, proxies);
    const output = new ChildOutput(out, options.verbose ?? false);
    const supervisor = new Supervisor(specs, {
      stopTimeoutMs: config.stopTimeoutMs,
      ...options.supervisor,
      onEvent: (event) => {
        reportChildEvent(event, report);
        dashboard?.pushState();
      },
      onOutput: output.line,
    });
    const stopTimeoutMs = options.supervisor?.stopTimeoutMs ?? config.stopTimeoutMs;
    parts.add('processes', () => supervisor.stop(), { timeoutMs: stopTimeoutMs + STOP_MARGIN_MS });

    const monitor = new StatusMonitor({
      host: config.host,
      adminPortToken: config.adminPortToken,
      processes: config.processes,
      isRunning: (id) => supervisor.view(id)?.state === 'running',
      onPoll: () => onPoll(),
    });
    parts.add('monitor', () => monitor.close());
    const celery = new CeleryClient({
      rabbitmqUrl: config.common.rabbitmqUrl,
      redis: config.common.redis,
      queueType: config.matchQueueType,
    });
    parts.addOuter('celery client', () => celery.close());
    const busMonitor = new BusMonitor({
      rabbitmqUrl: config.common.rabbitmqUrl,
      logger: createLogger({ level: 'silent' }),
    });
    parts.addOuter('dashboard bus', () => busMonitor.close());
    const actions = new StackActions({ config, supervisor, proxies, pool, celery, report });

    let stopping = false;
    const dashboardUrl = `http://${config.host}:${config.dashboardPort}`;
    const snapshot = (): StackSnapshot =>
      stackSnapshot({
        config,
        startedAt,
        dashboardUrl,
        supervisor,
        monitor,
        proxies,
        busMonitor,
        lastLog: (id) => output.last(id),
        stopping: () => stopping,
      });

    dashboard = new DashboardServer({
      page,
      snapshot,
      history: () => ({ bus: busMonitor.recent(), activity: activity.recent() }),
      actions,
      token: config.dashboardToken,
      loopback: isLoopbackHost(config.host),
    });
    const server = dashboard;
    busMonitor.onEvent((event) => server.broadcast('bus', event));
    await server.listen(config.dashboardPort, config.host);

    // Status transitions go to the activity log (degraded, back to ready...).
    const readiness = new Readiness({ startedAt, dashboardUrl, report });
    function onPoll(): void {
      readiness.observe(snapshot());
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
      ready: readiness.ready,
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
          await parts.close();
          out('stack stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await parts.close();
    throw err;
  }
}
