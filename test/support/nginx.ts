import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, chmodSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The nginx binary the tests run (Debian's path); NGINX_BIN overrides it. */
export const NGINX_BIN = process.env.NGINX_BIN || '/usr/sbin/nginx';

/** deploy/nginx/auth-request.conf.template: nginx + auth_request in front of an app. */
export const NGINX_TEMPLATE = join(
  import.meta.dirname,
  '..',
  '..',
  'deploy',
  'nginx',
  'auth-request.conf.template',
);

/** Values for the template's hosts; the ports have no default. */
export const NGINX_DEFAULTS: Readonly<Record<string, string>> = {
  LISTEN_HOST: '127.0.0.1',
  APP_HOST: '127.0.0.1',
  AUTHZ_HOST_1: '127.0.0.1',
  AUTHZ_HOST_2: '127.0.0.1',
};

export interface NginxVars {
  LISTEN_PORT: number | string;
  APP_PORT: number | string;
  AUTHZ_PORT_1: number | string;
  AUTHZ_PORT_2: number | string;
  [name: string]: number | string;
}

/** Placeholders are `${UPPER_CASE}`; nginx's own variables are lower case and stay as they are. */
const PLACEHOLDER = /\$\{([A-Z][A-Z0-9_]*)\}/g;

/**
 * Fills in the template's `${NAME}` placeholders (hosts default to
 * 127.0.0.1). Throws on a placeholder without a value, so a renamed one
 * cannot slip through as a literal.
 */
export function renderNginxConf(vars: NginxVars, template = readFileSync(NGINX_TEMPLATE, 'utf8')): string {
  const values: Record<string, string | number> = { ...NGINX_DEFAULTS, ...vars };
  const missing = new Set<string>();
  const text = template.replace(PLACEHOLDER, (whole, name: string) => {
    const value = values[name];
    if (value === undefined) {
      missing.add(name);
      return whole;
    }
    return String(value);
  });
  if (missing.size) throw new Error(`nginx template: no value for ${[...missing].join(', ')}`);
  return text;
}

/** A port that was free a moment ago (the kernel's pick). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface RunningNginx {
  /** The port of the config's first `listen`. */
  port: number;
  /** The prefix directory: nginx.conf, error.log, access.log, temp files. */
  prefix: string;
  /** nginx's error log so far (for assertion messages). */
  errorLog(): string;
  /** Graceful stop (SIGQUIT), then SIGTERM, then SIGKILL; removes the prefix. Idempotent. */
  stop(): Promise<void>;
}

/** Fails with how to install nginx when it is missing (never skips). */
export function requireNginx(): void {
  if (!existsSync(NGINX_BIN)) {
    throw new Error(
      `nginx not found at ${NGINX_BIN}: install it (as root: apt-get install -y nginx-light), ` +
        'or point NGINX_BIN at an nginx built with http_auth_request_module',
    );
  }
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  // A test that died without stop(): SIGTERM makes the master stop its workers too.
  for (const child of running) child.kill('SIGTERM');
});

/**
 * Writes `conf` to a fresh prefix directory, checks it with `nginx -t`, starts
 * nginx in the foreground (`-g 'daemon off;'`) and resolves once its port
 * accepts connections.
 */
export async function startNginx(conf: string, options: { timeoutMs?: number } = {}): Promise<RunningNginx> {
  requireNginx();
  const listen = /^\s*listen\s+(?:\S+:)?(\d+)\b/m.exec(conf);
  if (!listen) throw new Error('nginx config: no `listen <port>` directive');
  const port = Number(listen[1]);
  const prefix = mkdtempSync(join(tmpdir(), 'cachecast-nginx-'));
  // Run as root, nginx's workers switch to `nobody`: they must reach the temp dirs in here.
  chmodSync(prefix, 0o755);
  const confPath = join(prefix, 'nginx.conf');
  const errorPath = join(prefix, 'error.log');
  writeFileSync(confPath, conf);
  const base = ['-c', confPath, '-p', `${prefix}/`, '-e', errorPath];
  const errorLog = (): string => (existsSync(errorPath) ? readFileSync(errorPath, 'utf8') : '');

  const check = spawnSync(NGINX_BIN, ['-t', '-q', ...base], { encoding: 'utf8', timeout: 10_000 });
  if (check.status !== 0) {
    const detail =
      `${check.stderr ?? ''}${errorLog()}`.trim() || String(check.error ?? `exit ${check.status}`);
    rmSync(prefix, { recursive: true, force: true });
    throw new Error(`nginx -t failed:\n${detail}`);
  }

  const child = spawn(NGINX_BIN, [...base, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let exitedNow = false;
  void exited.then(() => {
    exitedNow = true;
    running.delete(child);
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      for (const [signal, waitMs] of [
        ['SIGQUIT', 3000],
        ['SIGTERM', 2000],
        ['SIGKILL', 2000],
      ] as const) {
        if (exitedNow) break;
        child.kill(signal);
        await Promise.race([exited, new Promise((r) => setTimeout(r, waitMs))]);
      }
      rmSync(prefix, { recursive: true, force: true });
    })();
    return stopping;
  };

  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    if (exitedNow) {
      const detail = `${stderr}${errorLog()}`.trim();
      await stop();
      throw new Error(`nginx exited at start:\n${detail}`);
    }
    // Another process on the port would also accept: nginx logs that it could not bind.
    if (/bind\(\) to .* failed/.test(errorLog())) {
      const detail = errorLog();
      await stop();
      throw new Error(`nginx could not bind port ${port}:\n${detail}`);
    }
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      const detail = errorLog();
      await stop();
      throw new Error(`nginx did not listen on ${port} in time:\n${detail}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { port, prefix, errorLog, stop };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
