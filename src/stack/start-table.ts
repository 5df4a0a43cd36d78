import { redactUrl } from '../util/redact.ts';
import type { BrokerProxies } from './broker-proxy.ts';
import type { StackConfig } from './config.ts';
import { isLoopbackHost, processUrls } from './config.ts';
import type { ChildView } from './supervisor.ts';

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
