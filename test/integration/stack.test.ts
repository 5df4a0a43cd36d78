// `cachecast stack` as a user runs it (the compiled bin, as a child process),
// on offset ports and its own database schema: every process ready, the table,
// the dashboard's actions (logout propagation, catalog follow, Celery match,
// broker disconnect), a crashed child reported and restarted, and SIGINT
// stopping every child.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { ProcessSnapshot } from '../../src/stack/snapshot.ts';
import type { StackProcess } from '../support/stack-process.ts';
import { alive, startStackProcess } from '../support/stack-process.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/cachecast.js');
let stack: StackProcess;

before(async () => {
  stack = await startStackProcess();
});

after(async () => {
  await stack?.cleanup();
});

function byId(processes: ProcessSnapshot[], id: string): ProcessSnapshot {
  const p = processes.find((x) => x.id === id);
  assert.ok(p, `no process ${id}`);
  return p;
}

describe('cachecast stack', () => {
  it('runs auth, two ext-authz, catalog and two match workers as separate processes, and prints where', async () => {
    const s = await stack.state();
    const o = stack.offset;
    assert.deepEqual(
      s.processes.map((p) => [p.id, p.service, p.status]),
      [
        ['auth', 'auth', 'ready'],
        ['ext-authz-1', 'ext-authz', 'ready'],
        ['ext-authz-2', 'ext-authz', 'ready'],
        ['catalog', 'catalog', 'ready'],
        ['match-worker-1', 'match-worker', 'ready'],
        ['match-worker-2', 'match-worker', 'ready'],
      ],
    );
    const pids = s.processes.map((p) => p.pid);
    assert.equal(new Set(pids).size, 6, 'six distinct OS processes');
    for (const pid of pids) assert.ok(pid && alive(pid) && pid !== stack.child.pid);
    // CONTRACT.md's default ports, moved by the offset.
    assert.equal(byId(s.processes, 'auth').urls.http, `http://127.0.0.1:${8001 + o}`);
    assert.equal(byId(s.processes, 'ext-authz-1').urls.grpc, `127.0.0.1:${9191 + o}`);
    assert.equal(byId(s.processes, 'ext-authz-2').urls.grpc, `127.0.0.1:${9192 + o}`);
    assert.equal(byId(s.processes, 'catalog').urls.admin, `http://127.0.0.1:${9003 + o}`);
    assert.equal(byId(s.processes, 'match-worker-1').urls.admin, `http://127.0.0.1:${9004 + o}`);
    assert.equal(byId(s.processes, 'match-worker-2').urls.admin, `http://127.0.0.1:${9014 + o}`);
    // Each child talks to the broker through its own proxy.
    const proxyPorts = s.processes.map((p) => p.broker?.port);
    assert.equal(new Set(proxyPorts).size, 6);

    // The sample catalog was imported into the empty schema, and every replica has it.
    for (const id of ['catalog', 'match-worker-1', 'match-worker-2']) {
      const replica = byId(s.processes, id).replicas.find((r) => r.dataset === 'catalog');
      assert.equal(replica?.size, 13, `${id}'s catalog replica`);
    }
    for (const id of ['ext-authz-1', 'ext-authz-2']) {
      assert.equal(byId(s.processes, id).replicas[0]?.dataset, 'blacklist');
    }

    const out = stack.output();
    assert.match(out, /imported the sample \(13 characters\)/);
    for (const p of s.processes) {
      const row = out.split('\n').find((line) => line.trim().startsWith(`${p.id} `));
      assert.ok(row, `the table has a row for ${p.id}`);
      assert.ok(row.includes(String(p.pid)), `${p.id}'s row shows its pid`);
      assert.ok(row.includes(p.urls.admin), `${p.id}'s row shows its admin URL`);
      if (p.urls.http) assert.ok(row.includes(p.urls.http));
    }
    assert.match(out, new RegExp(`dashboard\\s+http://127\\.0\\.0\\.1:${8000 + o}`));
    // Every child got the stack's per-run CACHE_EVENT_SECRET: none warned that it runs unsigned.
    assert.doesNotMatch(out, /CACHE_EVENT_SECRET is not set/);
    // Printed once the slowest process answered its poll, so possibly after /api/state says ready.
    await waitFor(() => /all 6 processes ready after/.test(stack.output()), 'the ready line', 10_000);

    const page = await fetch(stack.url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const html = await page.text();
    assert.match(html, /<title>cachecast stack<\/title>/);
    // The script is a module the page loads (no longer inlined): the live feed is in feed.js.
    assert.match(html, /<script type="module" src="dashboard\.js"><\/script>/);
    const feed = await fetch(`${stack.url}/feed.js`);
    assert.match(feed.headers.get('content-type') ?? '', /text\/javascript/);
    assert.match(await feed.text(), /new EventSource\('\/events'\)/);
  });

  it('streams the state over server-sent events', async () => {
    const res = await fetch(`${stack.url}/events`);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('event: state')) {
      const chunk = (await reader.read()) as { done: boolean; value?: Uint8Array };
      if (chunk.done || !chunk.value) break;
      text += Buffer.from(chunk.value).toString();
    }
    await reader.cancel();
    assert.match(text, /event: history\ndata: \{"bus":/);
    assert.match(text, /event: state\ndata: \{"started_at":/);
  });

  it('logout: the token is refused by both ext-authz instances, with the time it took', async () => {
    const login = await stack.post('/api/login', { user_id: 'stack-test' });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const checks = login.body.checks as Array<{ instance: string; status: number; user_id: string }>;
    assert.deepEqual(
      checks.map((c) => [c.instance, c.status, c.user_id]),
      [
        ['ext-authz-1', 200, 'stack-test'],
        ['ext-authz-2', 200, 'stack-test'],
      ],
    );
    const logout = await stack.post('/api/logout', { token: login.body.access_token });
    assert.equal(logout.status, 200, JSON.stringify(logout.body));
    const instances = logout.body.instances as Array<{
      instance: string;
      refused_after_ms: number | null;
      last: { status: number; error: string };
    }>;
    assert.deepEqual(
      instances.map((i) => [i.instance, i.last.status, i.last.error]),
      [
        ['ext-authz-1', 401, 'token_revoked'],
        ['ext-authz-2', 401, 'token_revoked'],
      ],
    );
    // A number once refused within the action's limit (5 s); null if not.
    for (const i of instances) assert.equal(typeof i.refused_after_ms, 'number', JSON.stringify(i));
    // The decisions the instances report reach the dashboard's state.
    await waitFor(async () => {
      const s = await stack.state();
      const revoked = new Set(s.decisions.filter((d) => d.reason === 'token_revoked').map((d) => d.instance));
      return revoked.has('ext-authz-1') && revoked.has('ext-authz-2');
    }, 'the token_revoked decisions of both instances in the state');
  });

  it('a catalog upsert and delete reach every catalog replica; a Celery match sees the new character', async () => {
    const upsert = await stack.post('/api/characters/upsert', {
      code: 'stack-test',
      name: 'Stacky',
      match_label: 'stack-label',
      type_label: 'test',
      dialog: 'hello',
    });
    assert.equal(upsert.status, 200, JSON.stringify(upsert.body));
    const replicas = upsert.body.replicas as Array<{
      process: string;
      after_ms: number | null;
      version: number;
    }>;
    assert.deepEqual(
      replicas.map((r) => r.process),
      ['catalog', 'match-worker-1', 'match-worker-2'],
    );
    for (const r of replicas) {
      assert.ok(r.after_ms !== null, `${r.process} followed`);
      assert.ok(r.version >= (upsert.body.version as number));
    }

    const match = await stack.post('/api/match', { middle_category: 'stack-label', user_id: 'stack-test' });
    assert.equal(match.status, 200, JSON.stringify(match.body));
    assert.equal(match.body.status, 'SUCCESS');
    assert.equal((match.body.result as { code: string }).code, 'stack-test');
    assert.match(String(match.body.worker), /^match-worker-[12]$/);
    const none = await stack.post('/api/match', { middle_category: 'no-such-label' });
    assert.equal(none.body.status, 'SUCCESS');
    assert.equal(none.body.result, null);

    const deleted = await stack.post('/api/characters/delete', { code: 'stack-test' });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    for (const r of deleted.body.replicas as Array<{ after_ms: number | null }>)
      assert.ok(r.after_ms !== null);
    const again = await stack.post('/api/characters/delete', { code: 'stack-test' });
    assert.equal(again.status, 404);
    assert.equal(again.body.error, 'not_found');

    // The dashboard saw the events on the fanout exchange itself.
    const history = (await (await fetch(`${stack.url}/api/history`)).json()) as {
      bus: Array<{ exchange: string; type: string; subject: string | null }>;
    };
    assert.ok(
      history.bus.some(
        (e) => e.exchange === 'character.cache' && e.type === 'upsert' && e.subject === 'stack-test',
      ),
    );
    assert.ok(history.bus.some((e) => e.exchange === 'character.cache' && e.type === 'delete'));
    assert.ok(
      history.bus.some((e) => e.exchange === 'auth.blacklist.events' && e.type === 'blacklist_added'),
    );
  });

  it('disconnecting a process from the broker makes it degraded, then ready again', async () => {
    const cut = await stack.post('/api/disconnect', { process: 'match-worker-2', ms: 3000 });
    assert.equal(cut.status, 200, JSON.stringify(cut.body));
    await waitFor(
      async () => byId((await stack.state()).processes, 'match-worker-2').status === 'degraded',
      'match-worker-2 degraded',
      10_000,
      50,
    );
    const during = byId((await stack.state()).processes, 'match-worker-2');
    assert.equal(during.broker?.state, 'cut');
    // The others are untouched.
    assert.equal(byId((await stack.state()).processes, 'match-worker-1').status, 'ready');
    await waitFor(
      async () => byId((await stack.state()).processes, 'match-worker-2').status === 'ready',
      'match-worker-2 ready again',
      30_000,
      100,
    );
    assert.equal(byId((await stack.state()).processes, 'match-worker-2').broker?.state, 'connected');
    // Transitions are printed after each poll round, on the stack's stdout: they may trail the state.
    assert.match(stack.output(), /match-worker-2: ready -> degraded/);
    await waitFor(
      () => /match-worker-2: degraded -> ready/.test(stack.output()),
      'the degraded -> ready line',
      10_000,
    );
  });

  it('a crashed child is reported and restarted', async () => {
    const before = byId((await stack.state()).processes, 'match-worker-1');
    assert.ok(before.pid);
    process.kill(before.pid, 'SIGKILL');
    await waitFor(
      async () => {
        const p = byId((await stack.state()).processes, 'match-worker-1');
        return p.restarts === before.restarts + 1 && p.status === 'ready' && p.pid !== before.pid;
      },
      'match-worker-1 restarted and ready',
      60_000,
      100,
    );
    const after = byId((await stack.state()).processes, 'match-worker-1');
    assert.equal(after.last_exit?.signal, 'SIGKILL');
    assert.match(after.last_exit?.description ?? '', /killed by SIGKILL/);
    assert.match(
      stack.output(),
      new RegExp(`match-worker-1 \\(pid ${before.pid}\\) killed by SIGKILL; restarting in`),
    );
    assert.match(stack.output(), /match-worker-1: restarted \(pid \d+, restart #1\)/);
  });

  it('a script that writes Host: 127.0.0.1 and no Origin cannot kill or log in without the token', async () => {
    const before = byId((await stack.state()).processes, 'auth');
    for (const [path, body] of [
      ['/api/kill', { process: 'auth' }],
      ['/api/login', { user_id: 'spoofed' }],
    ] as const) {
      // Node's fetch sends no Origin; Host is the dashboard's own.
      const res = await fetch(`${stack.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 403, path);
      assert.equal(((await res.json()) as { error: string }).error, 'forbidden_origin');
    }
    const after = byId((await stack.state()).processes, 'auth');
    assert.equal(after.pid, before.pid, 'auth was not killed');
    assert.equal(after.restarts, before.restarts);
  });

  it('a second stack on the same ports refuses to start, with one line saying why', async () => {
    const second = await run(process.execPath, [BIN, 'stack', '--port-offset', String(stack.offset)]).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(second.code, 1);
    assert.equal(second.stderr.trim().split('\n').length, 1, second.stderr);
    assert.match(
      second.stderr,
      /port \d+ \(dashboard\) is in use on 127\.0\.0\.1: is another stack running\?/,
    );
    const bad = await run(process.execPath, [BIN, 'stack', '--port-offset', 'lots']).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--port-offset/);
  });

  it('SIGINT stops every child (SIGTERM, drained) and exits 0', async () => {
    const pids = (await stack.state()).processes.map((p) => p.pid!);
    stack.child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      stack.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('no exit within 40 s')), 40_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.deepEqual(exit, { code: 0, signal: null }, stack.output());
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} is gone`);
    const out = stack.output();
    for (const id of ['auth', 'ext-authz-1', 'ext-authz-2', 'catalog', 'match-worker-1', 'match-worker-2']) {
      assert.match(out, new RegExp(`${id} stopped \\(exited with code 0\\)`));
    }
    assert.match(out, /stack stopped/);
  });
});
