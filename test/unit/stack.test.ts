// The stack's parts that need no services: the supervisor (crash, backoff,
// drain, SIGKILL after the timeout, a service missing from the build), the
// port layout and its overrides, and how bus events are summarized.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { describe, it } from 'node:test';
import { summarize } from '../../src/stack/bus-monitor.ts';
import { CeleryClient } from '../../src/stack/celery-client.ts';
import type { StackActions } from '../../src/stack/actions/stack-actions.ts';
import { isLoopbackHost, listPorts, loadStackConfig, portVariable } from '../../src/stack/config.ts';
import { DashboardServer } from '../../src/stack/dashboard-server.ts';
import { StatusMonitor } from '../../src/stack/monitor.ts';
import type { ChildSpec, SupervisorEvent } from '../../src/stack/supervisor.ts';
import { Supervisor } from '../../src/stack/supervisor.ts';
import { delay, waitFor } from '../support/wait.ts';

function node(id: string, script: string): ChildSpec {
  return { id, command: process.execPath, args: ['-e', script], env: { ...process.env } };
}

/** Prints `up <pid>` once its SIGTERM handler is installed: a SIGTERM before that would kill it. */
const RUNS_UNTIL_TERM = `process.on('SIGTERM', () => { console.log('draining'); setTimeout(() => process.exit(0), 50); }); console.log('up ' + process.pid); setInterval(() => {}, 1000);`;

describe('Supervisor', () => {
  it('restarts a child that crashes, with a growing backoff, and reports each crash', async () => {
    const events: SupervisorEvent[] = [];
    const supervisor = new Supervisor([node('crasher', `setTimeout(() => process.exit(3), 20);`)], {
      restartBaseMs: 20,
      restartMaxMs: 1000,
      onEvent: (e) => events.push(e),
    });
    supervisor.start();
    await waitFor(() => events.filter((e) => e.type === 'crashed').length >= 3, 'three crashes');
    await supervisor.stop();
    const crashes = events.filter((e) => e.type === 'crashed');
    assert.deepEqual(
      crashes.slice(0, 3).map((e) => [e.restartInMs, e.reason]),
      [
        [20, 'exited with code 3'],
        [40, 'exited with code 3'],
        [80, 'exited with code 3'],
      ],
    );
    const view = supervisor.view('crasher')!;
    assert.equal(view.state, 'stopped');
    assert.ok(view.restarts >= 2);
    assert.equal(view.last_exit?.code, 3);
  });

  it('stop() sends SIGTERM and waits for the child to drain; a killed child comes back', async () => {
    const events: SupervisorEvent[] = [];
    const lines: string[] = [];
    const supervisor = new Supervisor([node('svc', RUNS_UNTIL_TERM)], {
      restartBaseMs: 10,
      onEvent: (e) => events.push(e),
      onOutput: (_id, _stream, line) => lines.push(line),
    });
    supervisor.start();
    const first = supervisor.view('svc')!.pid!;
    assert.ok(first > 0);
    assert.equal(supervisor.kill('svc', 'SIGKILL'), true);
    await waitFor(() => {
      const v = supervisor.view('svc')!;
      return v.state === 'running' && v.pid !== undefined && v.pid !== first;
    }, 'a new process');
    const crash = events.find((e) => e.type === 'crashed');
    assert.equal(crash?.type === 'crashed' && crash.exit.signal, 'SIGKILL');
    const second = supervisor.view('svc')!.pid!;
    await waitFor(() => lines.includes(`up ${second}`), 'its SIGTERM handler installed', 10_000);
    await supervisor.stop();
    await supervisor.stop(); // idempotent
    const stopped = events.find((e) => e.type === 'stopped');
    assert.ok(stopped?.type === 'stopped' && stopped.exit?.code === 0 && !stopped.forced);
    assert.ok(lines.includes('draining'));
    assert.equal(supervisor.view('svc')!.state, 'stopped');
  });

  it('stop() kills a child that does not drain within the timeout', async () => {
    const events: SupervisorEvent[] = [];
    let up = false;
    const supervisor = new Supervisor(
      [node('stuck', `process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.log('up');`)],
      { stopTimeoutMs: 200, onEvent: (e) => events.push(e), onOutput: () => (up = true) },
    );
    supervisor.start();
    await waitFor(() => up, 'the child up');
    const started = Date.now();
    await supervisor.stop();
    assert.ok(Date.now() - started >= 190);
    const stopped = events.find((e) => e.type === 'stopped');
    assert.ok(stopped?.type === 'stopped' && stopped.forced && stopped.exit?.signal === 'SIGKILL');
  });

  it('stop() does not wait forever for a descendant holding stdout/stderr; it is killed with the group', async () => {
    // The leader exits on SIGTERM; the grandchild it spawned shares its stdio and process group,
    // and ignores SIGTERM: 'close' never comes while it lives.
    const grandchild = `process.on('SIGTERM', () => {}); console.log('grandchild ready'); setInterval(() => {}, 1000);`;
    const leader = `
      const { spawn } = require('node:child_process');
      const g = spawn(process.execPath, ['-e', ${JSON.stringify(grandchild)}], { stdio: 'inherit' });
      console.log('grandchild ' + g.pid);
      process.on('SIGTERM', () => process.exit(0));
      setInterval(() => {}, 1000);`;
    const events: SupervisorEvent[] = [];
    const lines: string[] = [];
    const supervisor = new Supervisor([node('parent', leader)], {
      stopTimeoutMs: 500,
      onEvent: (e) => events.push(e),
      onOutput: (_id, _stream, line) => lines.push(line),
    });
    supervisor.start();
    await waitFor(
      () => lines.includes('grandchild ready') && lines.some((l) => l.startsWith('grandchild ')),
      'the grandchild up',
    );
    const pid = Number(lines.find((l) => /^grandchild \d+$/.test(l))!.split(' ')[1]);
    const started = Date.now();
    const stop = supervisor.stop();
    const outcome = await Promise.race([stop.then(() => 'stopped'), delay(5000).then(() => 'still waiting')]);
    assert.equal(outcome, 'stopped', 'stop() returned');
    assert.ok(Date.now() - started < 3000, `stopped in ${Date.now() - started} ms`);
    const stopped = events.find((e) => e.type === 'stopped');
    assert.ok(stopped?.type === 'stopped' && stopped.exit?.code === 0, 'the leader drained and exited 0');
    assert.ok(stopped.forced, 'what outlived it was SIGKILLed');
    await waitFor(() => !alive(pid), 'the grandchild gone', 3000);
    assert.equal(supervisor.view('parent')!.state, 'stopped');
  });

  it('does not restart a service this build does not have', async () => {
    const events: SupervisorEvent[] = [];
    const supervisor = new Supervisor(
      [node('ghost', `console.error('cachecast: unknown service "ghost"'); process.exit(1);`)],
      { restartBaseMs: 10, onEvent: (e) => events.push(e) },
    );
    supervisor.start();
    await waitFor(() => supervisor.view('ghost')!.state === 'unavailable', 'unavailable');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(events.filter((e) => e.type === 'spawned').length, 1);
    assert.match(supervisor.view('ghost')!.stderr_tail.join('\n'), /unknown service/);
    await supervisor.stop();
    assert.equal(supervisor.view('ghost')!.state, 'unavailable');
  });
});

/** Whether `pid` runs (a zombie waiting for a reaper does not). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

describe('status monitor', () => {
  it('a round whose onPoll throws is no unhandled rejection, and polling goes on', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    let polls = 0;
    const monitor = new StatusMonitor({
      host: '127.0.0.1',
      processes: [],
      intervalMs: 5,
      isRunning: () => false,
      onPoll: () => {
        polls++;
        throw new Error('listener bug');
      },
    });
    try {
      monitor.start();
      await waitFor(() => polls >= 3, 'three rounds');
      await delay(20); // let a rejection of the last round surface
      assert.deepEqual(unhandled, []);
      await assert.rejects(monitor.pollNow(), /listener bug/, 'a direct poll still reports it');
    } finally {
      await monitor.close();
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

/**
 * Just enough of a Redis server for node-redis and the Celery client: answers
 * every command (SUBSCRIBE with its confirmation, GET with nil), or stalls
 * (accepts and never answers), or refuses connections past a budget.
 */
async function fakeRedis(): Promise<{
  url: string;
  set(mode: 'answer' | 'stall' | { answer: number }): void;
  close(): Promise<void>;
}> {
  let mode: 'answer' | 'stall' | { answer: number } = 'answer';
  const sockets = new Set<Socket>();
  const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  const reply = (args: string[]): string => {
    switch (args[0]?.toUpperCase()) {
      case 'SUBSCRIBE':
        return args
          .slice(1)
          .map((ch, i) => `*3\r\n${bulk('subscribe')}${bulk(ch)}:${i + 1}\r\n`)
          .join('');
      case 'UNSUBSCRIBE':
        return args
          .slice(1)
          .map((ch) => `*3\r\n${bulk('unsubscribe')}${bulk(ch)}:0\r\n`)
          .join('');
      case 'GET':
        return '$-1\r\n';
      default:
        return '+OK\r\n';
    }
  };
  /** One RESP array of bulk strings from the front of `text`, and the characters it used. */
  const parse = (text: string): { args: string[]; used: number } | undefined => {
    let end = text.indexOf('\r\n');
    if (!text.startsWith('*') || end < 0) return undefined;
    const args: string[] = [];
    let pos = end + 2;
    for (let n = Number(text.slice(1, end)); n > 0; n--) {
      end = text.indexOf('\r\n', pos);
      if (end < 0) return undefined;
      const start = end + 2;
      const len = Number(text.slice(pos + 1, end));
      if (text.length < start + len + 2) return undefined;
      args.push(text.slice(start, start + len));
      pos = start + len + 2;
    }
    return { args, used: pos };
  };
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (typeof mode === 'object') {
      if (mode.answer <= 0) return void socket.destroy();
      mode.answer--;
    } else if (mode === 'stall') {
      return;
    }
    let pending = '';
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      for (let cmd = parse(pending); cmd; cmd = parse(pending)) {
        pending = pending.slice(cmd.used);
        socket.write(reply(cmd.args));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    set: (m) => void (mode = m),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** How `promise` ended, or that it had not within `ms`. */
async function outcome(promise: Promise<unknown>, ms = 4000): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`still pending after ${ms} ms`), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => 'resolved',
        (err: unknown) => `rejected: ${err instanceof Error ? err.message : String(err)}`,
      ),
      guard,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe('Celery client (the dashboard match) without Redis', () => {
  // No broker either: nothing listens on port 1.
  const rabbitmqUrl = 'amqp://guest:guest@127.0.0.1:1';

  it('fails within its timeout when Redis refuses or never answers, and connects afresh later', async () => {
    const refused = new CeleryClient({ rabbitmqUrl, redis: 'redis://127.0.0.1:1/0' });
    const started = Date.now();
    assert.match(
      await outcome(refused.match({ middle_category: 'x' }, { timeoutMs: 1000 })),
      /^rejected: .*ECONNREFUSED/,
    );
    assert.ok(Date.now() - started < 1000, 'refused: at once, no retry loop');
    assert.equal(await outcome(refused.close()), 'resolved');

    const redis = await fakeRedis();
    const client = new CeleryClient({
      rabbitmqUrl,
      redis: redis.url,
      redisConnectTimeoutMs: 400,
      publishTimeoutMs: 1500,
    });
    try {
      // Accepts the connection, never answers the handshake: the match's own timeout covers connecting.
      redis.set('stall');
      assert.match(
        await outcome(client.match({ middle_category: 'x' }, { timeoutMs: 300 })),
        /^rejected: .*within 300 ms \(connecting to Redis\)/,
      );
      await delay(300); // the stalled attempt is abandoned after redisConnectTimeoutMs

      // One client connects, the other is cut: a half-connected pair.
      redis.set({ answer: 1 });
      assert.match(
        await outcome(client.match({ middle_category: 'x' }, { timeoutMs: 1000 })),
        /^rejected: .*Socket closed unexpectedly/,
      );

      // Redis answers again: a new pair of connections, and the call gets as far as the broker.
      redis.set('answer');
      assert.match(
        await outcome(client.match({ middle_category: 'x' }, { timeoutMs: 500 })),
        /^rejected: .*within 500 ms \(publishing\)/,
      );
    } finally {
      assert.equal(await outcome(client.close()), 'resolved');
      await redis.close();
    }
  });
});

describe('stack configuration', () => {
  it("uses CONTRACT.md's ports, moved by an offset, each overridable", () => {
    const defaults = loadStackConfig({});
    assert.equal(defaults.dashboardPort, 8000);
    assert.deepEqual(
      defaults.processes.map((p) => [p.id, p.port, p.adminPort, p.grpcPort]),
      [
        ['auth', 8001, 9001, undefined],
        ['ext-authz-1', 8002, 9002, 9191],
        ['ext-authz-2', 8012, 9012, 9192],
        ['catalog', 8003, 9003, undefined],
        ['match-worker-1', undefined, 9004, undefined],
        ['match-worker-2', undefined, 9014, undefined],
      ],
    );
    assert.equal(listPorts(defaults).length, 13);
    assert.ok(defaults.jwtSecret.length >= 32 && defaults.adminToken.length >= 16);
    assert.notEqual(loadStackConfig({}).jwtSecret, defaults.jwtSecret, 'a new secret per run');
    // Every child runs signed: a per-run CACHE_EVENT_SECRET unless one is given.
    assert.ok(defaults.eventSecret.length >= 16);
    assert.notEqual(loadStackConfig({}).eventSecret, defaults.eventSecret, 'a new event secret per run');
    assert.equal(loadStackConfig({ CACHE_EVENT_SECRET: 'e'.repeat(20) }).eventSecret, 'e'.repeat(20));

    const moved = loadStackConfig({
      STACK_PORT_OFFSET: '100',
      [portVariable('ext-authz-2', 'GRPC_PORT')]: '7000',
    });
    assert.equal(moved.dashboardPort, 8100);
    assert.equal(moved.processes[2]!.grpcPort, 7000);
    assert.equal(moved.processes[3]!.adminPort, 9103);
    assert.equal(loadStackConfig({}, { portOffset: 5 }).dashboardPort, 8005);
    assert.equal(loadStackConfig({ STACK_DASHBOARD_PORT: '8080' }).dashboardPort, 8080);
    assert.equal(loadStackConfig({ JWT_SECRET: 'x'.repeat(40) }).jwtSecret, 'x'.repeat(40));

    assert.throws(() => loadStackConfig({ STACK_DASHBOARD_PORT: '8001' }), /port 8001 is given to both/);
    assert.throws(() => loadStackConfig({ STACK_PORT_OFFSET: '60000' }), /STACK_PORT_OFFSET/);
    assert.throws(() => loadStackConfig({ JWT_SECRET: 'short' }), /JWT_SECRET must be at least 32/);
  });

  it('has a dashboard token per run (or STACK_DASHBOARD_TOKEN) and knows a loopback host', () => {
    const a = loadStackConfig({});
    assert.ok(a.dashboardToken.length >= 16 && !a.dashboardTokenGiven);
    assert.notEqual(loadStackConfig({}).dashboardToken, a.dashboardToken, 'a new token per run');
    const given = loadStackConfig({ STACK_DASHBOARD_TOKEN: 't'.repeat(20) });
    assert.equal(given.dashboardToken, 't'.repeat(20));
    assert.ok(given.dashboardTokenGiven);
    assert.throws(() => loadStackConfig({ STACK_DASHBOARD_TOKEN: 'short' }), /STACK_DASHBOARD_TOKEN/);
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]'])
      assert.ok(isLoopbackHost(host), host);
    for (const host of ['0.0.0.0', '192.168.1.10', '::', 'example.com', '127.0.0.1.example.com'])
      assert.ok(!isLoopbackHost(host), host);
  });
});

/** A raw HTTP request: any Host (or none), any Origin, as a script can send them. */
function raw(
  port: number,
  method: string,
  path: string,
  given: Record<string, string | undefined>,
  body?: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  const headers = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, setHost: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('dashboard server: who may act', () => {
  const TOKEN = 'dashboard-token-0123456789abcdef';
  const calls: string[] = [];
  // Only what the routes under test call; each records that it ran.
  const actions = {
    kill: (id: string) => (calls.push(`kill ${id}`), { killed: id }),
    login: (user: string) => Promise.resolve((calls.push(`login ${user}`), { access_token: 'minted' })),
    characters: () => Promise.resolve([]),
  } as unknown as StackActions;

  async function dashboard(loopback: boolean): Promise<{ port: number; close(): Promise<void> }> {
    const server = new DashboardServer({
      page: '<html>dashboard</html>',
      snapshot: () => ({ processes: [] }),
      history: () => ({ bus: [], activity: [] }),
      actions,
      token: TOKEN,
      loopback,
    });
    const port = await server.listen(0, '127.0.0.1');
    return { port, close: () => server.close() };
  }
  const kill = (port: number, headers: Record<string, string | undefined>) =>
    raw(port, 'POST', '/api/kill', { 'content-type': 'application/json', ...headers }, '{"process":"auth"}');

  it('on loopback: a spoofed Host with no Origin kills nothing and mints nothing', async () => {
    const d = await dashboard(true);
    try {
      calls.length = 0;
      const host = `127.0.0.1:${d.port}`;
      for (const headers of [
        { host },
        { host: `localhost:${d.port}` },
        { host, origin: 'http://evil.example' },
        { host, origin: `https://${host}` },
        { host, origin: 'null' },
        { host, authorization: 'Bearer wrong-token-0123456789' },
      ]) {
        const killed = await kill(d.port, headers);
        assert.equal(killed.status, 403, `${JSON.stringify(headers)}: ${killed.body}`);
        assert.equal((JSON.parse(killed.body) as { error: string }).error, 'forbidden_origin');
        const login = await raw(d.port, 'POST', '/api/login', {
          'content-type': 'application/json',
          ...headers,
        });
        assert.equal(login.status, 403, JSON.stringify(headers));
        assert.doesNotMatch(login.body, /minted/);
      }
      // A rebound DNS name: not even a read. No Host at all: Node's parser already answers 400.
      const rebound = { host: `evil.example:${d.port}`, origin: `http://evil.example:${d.port}` };
      assert.equal((await kill(d.port, rebound)).status, 403);
      assert.equal((await raw(d.port, 'GET', '/api/state', rebound)).status, 403);
      assert.equal((await kill(d.port, {})).status, 400);
      assert.deepEqual(calls, [], 'no action ran');

      // The page itself (a browser sends its Origin), and a script with the token, may act.
      assert.equal((await kill(d.port, { host, origin: `http://${host}` })).status, 200);
      assert.equal((await kill(d.port, { host, authorization: `Bearer ${TOKEN}` })).status, 200);
      assert.deepEqual(calls, ['kill auth', 'kill auth']);
      assert.equal(
        (await raw(d.port, 'GET', '/api/state', { host })).status,
        200,
        'reads stay open on loopback',
      );
    } finally {
      await d.close();
    }
  });

  it('off loopback: nothing but /healthz without the token; /?token= sets a same-site cookie', async () => {
    const d = await dashboard(false);
    try {
      calls.length = 0;
      const host = `192.0.2.7:${d.port}`;
      const origin = `http://${host}`;
      assert.equal((await raw(d.port, 'GET', '/healthz', { host })).status, 200);
      for (const path of ['/', '/api/state', '/events', '/api/characters'])
        assert.equal((await raw(d.port, 'GET', path, { host })).status, 401, path);
      // Host and Origin are whatever the client writes: they prove nothing here.
      for (const headers of [
        { host },
        { host, origin },
        { host: `127.0.0.1:${d.port}`, origin: `http://127.0.0.1:${d.port}` },
      ])
        assert.equal((await kill(d.port, headers)).status, 401, JSON.stringify(headers));
      assert.equal((await raw(d.port, 'GET', '/?token=wrong', { host })).status, 401);
      assert.deepEqual(calls, []);

      const landing = await raw(d.port, 'GET', `/?token=${TOKEN}`, { host });
      assert.equal(landing.status, 303);
      assert.equal(landing.headers.location, '/');
      const cookie = String(landing.headers['set-cookie']?.[0]);
      assert.match(cookie, /HttpOnly/);
      assert.match(cookie, /SameSite=Strict/);
      const pair = cookie.split(';')[0]!;
      assert.equal((await raw(d.port, 'GET', '/', { host, cookie: pair })).status, 200);
      assert.equal(
        (await raw(d.port, 'GET', '/api/state', { host, cookie: 'other=1; ' + pair })).status,
        200,
      );
      assert.equal(
        (await kill(d.port, { host, origin, cookie: pair })).status,
        200,
        'the page, with its cookie',
      );
      assert.equal((await kill(d.port, { host, authorization: `Bearer ${TOKEN}` })).status, 200, 'a script');
      assert.equal((await kill(d.port, { host, origin: 'http://evil.example', cookie: pair })).status, 403);
      assert.deepEqual(calls, ['kill auth', 'kill auth']);
    } finally {
      await d.close();
    }
  });
});

describe('bus event summaries', () => {
  const message = (topic: string, body: unknown) => ({
    topic,
    body: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
    headers: {},
    contentType: 'application/json',
  });

  it('names what an event is about', () => {
    const upsert = summarize(
      message('character.cache', {
        type: 'upsert',
        version: 7,
        origin: 'host-1',
        published_at: 1000,
        character: { code: 'eco-can', name: 'Canny', match_label: 'can' },
      }),
      1012,
      1,
    );
    assert.equal(upsert.type, 'upsert');
    assert.equal(upsert.version, 7);
    assert.equal(upsert.transit_ms, 12);
    assert.equal(upsert.subject, 'eco-can');
    assert.match(upsert.summary, /eco-can "Canny"/);

    const revoked = summarize(
      message('auth.blacklist.events', { type: 'blacklist_added', jti: 'j-1', expire_at: 1 }),
      0,
      2,
    );
    assert.equal(revoked.subject, 'j-1');
    assert.equal(revoked.version, null);
    assert.match(revoked.summary, /jti j-1 revoked until 1970/);

    assert.match(
      summarize(message('character.cache', { type: 'full_refresh', characters: [{}, {}] }), 0, 3).summary,
      /2 characters/,
    );
    assert.equal(summarize(message('character.cache', 'not json'), 0, 4).type, 'unreadable');
  });
});
