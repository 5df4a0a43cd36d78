import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ActivityLine } from './dashboard-server.ts';
import type { BrokerProxies } from './broker-proxy.ts';
import type { StackConfig, StackProcessSpec } from './config.ts';
import type { ChildSpec, SupervisorEvent } from './supervisor.ts';
import { describeExit } from './supervisor.ts';

/** The package root (where bin/ and data/ are), from src/stack or dist/stack. */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(PACKAGE_ROOT, 'bin', 'cachecast.js');
/** Preloaded into each child: it stops itself if the stack dies without stopping it. */
const WATCHDOG = join(PACKAGE_ROOT, 'dist', 'stack', 'parent-watchdog.js');

/** How to start each process of the stack: `cachecast serve <service>`, behind its broker proxy. */
export async function childSpecs(
  env: NodeJS.ProcessEnv,
  config: StackConfig,
  proxies: BrokerProxies,
): Promise<ChildSpec[]> {
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
  return specs;
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

/** The activity-log line for a supervisor event, if it deserves one. */
export function reportChildEvent(
  event: SupervisorEvent,
  report: (level: ActivityLine['level'], message: string) => void,
): void {
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
}
