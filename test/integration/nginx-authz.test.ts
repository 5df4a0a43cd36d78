import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  adminJson,
  check,
  login,
  logout,
  startAuthMember,
  startAuthzMember,
  waitRefused,
} from '../support/authz-fleet.ts';
import { badTokens } from '../support/jwt-tokens.ts';
import type { RunningNginx } from '../support/nginx.ts';
import { freePort, renderNginxConf, startNginx } from '../support/nginx.ts';
import { waitFor } from '../support/wait.ts';

// A real nginx (deploy/nginx/auth-request.conf.template) with auth_request in front of
// an application, asking two real ext-authz instances, round robin.
let auth: FleetMember;
let authz: FleetMember[];
let app: Server;
let nginx: RunningNginx;
const seenByApp: Array<string | undefined> = [];

before(async () => {
  auth = await startAuthMember();
  authz = await Promise.all([startAuthzMember(), startAuthzMember()]);
  app = createServer((req, res) => {
    seenByApp.push(req.headers['x-user-id'] as string | undefined);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ user: req.headers['x-user-id'] ?? null, path: req.url }));
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  nginx = await startNginx(
    renderNginxConf({
      LISTEN_PORT: await freePort(),
      APP_PORT: (app.address() as AddressInfo).port,
      AUTHZ_PORT_1: new URL(authz[0]!.http).port,
      AUTHZ_PORT_2: new URL(authz[1]!.http).port,
    }),
  );
});

after(async () => {
  await nginx?.stop();
  await new Promise((resolve) => app?.close(resolve));
  await Promise.all([auth, ...(authz ?? [])].map((m) => m?.service.close()));
});

async function viaNginx(token: string | undefined, path = '/api/v1/things?x=1', init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
  const res = await fetch(`http://127.0.0.1:${nginx.port}${path}`, { ...init, headers });
  const text = await res.text();
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: text };
}

describe('nginx auth_request -> ext-authz', () => {
  it('passes a valid token to the application with the user header, on both instances', async () => {
    const token = await login(auth, 'nginx-user');
    seenByApp.length = 0;
    for (let i = 0; i < 6; i++) {
      const res = await viaNginx(token, '/api/v1/things?x=1', {
        method: i % 2 ? 'POST' : 'GET',
        headers: { 'x-user-id': 'spoofed' },
        ...(i % 2 ? { body: 'payload' } : {}),
      });
      assert.equal(res.status, 200, nginx.errorLog());
      assert.equal((JSON.parse(res.body) as { user: string }).user, 'nginx-user');
    }
    assert.deepEqual(
      new Set(seenByApp),
      new Set(['nginx-user']),
      'a client-sent x-user-id never reaches the app',
    );
    const counts = await Promise.all(
      authz.map(
        async (m) => (await adminJson<{ counts: { allow?: number } }>(m, '/decisions')).counts.allow ?? 0,
      ),
    );
    assert.ok(
      counts.every((n) => n > 0),
      `round robin reached both instances: ${counts.join(', ')}`,
    );
  });

  it('refuses every bad token with 401, the challenge and the error code, on both paths', async () => {
    seenByApp.length = 0;
    for (const { name, token, error } of badTokens()) {
      const res = await viaNginx(token);
      assert.equal(res.status, 401, `${name} via nginx`);
      assert.equal(res.challenge, 'Bearer error="invalid_token"', name);
      assert.equal((JSON.parse(res.body) as { error: string }).error, error, name);
      for (const member of authz) assert.equal((await check(member, token)).status, 401, `${name} direct`);
    }
    const missing = await viaNginx(undefined);
    assert.equal(missing.status, 401);
    assert.equal((JSON.parse(missing.body) as { error: string }).error, 'missing_token');
    assert.equal(seenByApp.length, 0, 'no denied request reached the application');
  });

  it('a logout is refused by both instances, through nginx, within milliseconds', async (t) => {
    const token = await login(auth, 'leaving');
    assert.equal((await viaNginx(token)).status, 200);
    assert.equal(await logout(auth, token), 204);
    // From the logout's answer (its broker confirm is a disk write) to refused everywhere; a
    // bound generous enough for a loaded CI machine: the benchmark measures the milliseconds.
    const started = performance.now();
    await Promise.all(authz.map((m) => waitRefused(m, token, 5000)));
    const elapsed = performance.now() - started;
    // Round robin: several requests through nginx reach both instances; all are refused.
    for (let i = 0; i < 4; i++) {
      const res = await viaNginx(token);
      assert.equal(res.status, 401);
      assert.equal((JSON.parse(res.body) as { error: string }).error, 'token_revoked');
    }
    t.diagnostic(`refused everywhere ${elapsed.toFixed(1)} ms after the logout answered`);
  });

  it('fails closed with 503 when no ext-authz instance answers', async () => {
    const token = await login(auth, 'closed');
    const [one, two] = authz;
    await Promise.all([one!.service.close(), two!.service.close()]);
    await waitFor(async () => (await viaNginx(token)).status === 503, 'nginx answers 503', 5000);
  });
});
