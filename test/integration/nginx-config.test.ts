// The nginx auth_request config (deploy/nginx/auth-request.conf.template),
// wired to stand-ins: two fake ext-authz instances and an app that echoes what
// it received. Checks the wiring only; the real ext-authz behind nginx is
// tested end to end elsewhere with the same helper (test/support/nginx.ts).
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { RunningNginx } from '../support/nginx.ts';
import { freePort, renderNginxConf, requireNginx, startNginx } from '../support/nginx.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type AuthzMode = 'normal' | 'error';

/** A node:http server that records what it received; headers up to 96 KiB. */
async function recordingServer(
  respond: (seen: Seen, res: ServerResponse) => void,
): Promise<{ server: Server; port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer({ maxHeaderSize: 96 * 1024 }, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(entry);
      respond(entry, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, seen };
}

const WWW_AUTHENTICATE = 'Bearer error="invalid_token"';
/** The fake's x-auth-error per Authorization header ('' = none sent). */
const DENY_CODES: Record<string, string> = {
  'Bearer bad': 'invalid_token',
  'Bearer revoked': 'token_revoked',
  'Bearer old-authz': '',
  'Bearer odd': 'x"}, "admin": true',
};

function fakeAuthz(mode: { value: AuthzMode }): ReturnType<typeof recordingServer> {
  return recordingServer((seen, res) => {
    if (mode.value === 'error') {
      res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal"}');
    } else if (seen.headers.authorization === 'Bearer good') {
      res.writeHead(200, { 'x-user-id': 'u-1', 'x-auth-jti': 'jti-1' }).end();
    } else {
      // ext-authz names the reason in x-auth-error (nginx drops the body).
      const code = DENY_CODES[seen.headers.authorization ?? ''] ?? 'missing_token';
      res
        .writeHead(401, {
          'www-authenticate': WWW_AUTHENTICATE,
          'content-type': 'application/json',
          ...(code ? { 'x-auth-error': code } : {}),
        })
        .end(JSON.stringify({ error: code || 'invalid_token' }));
    }
  });
}

const authzMode = { value: 'normal' as AuthzMode };
let authz1: Awaited<ReturnType<typeof recordingServer>>;
let authz2: Awaited<ReturnType<typeof recordingServer>>;
let app: Awaited<ReturnType<typeof recordingServer>>;
let nginx: RunningNginx;
let base = '';

const authzSeen = (): Seen[] => [...authz1.seen, ...authz2.seen];
const clearSeen = (): void => {
  authz1.seen.length = 0;
  authz2.seen.length = 0;
  app.seen.length = 0;
};

before(async () => {
  requireNginx();
  authz1 = await fakeAuthz(authzMode);
  authz2 = await fakeAuthz(authzMode);
  app = await recordingServer((seen, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true }));
  });
  nginx = await startNginx(
    renderNginxConf({
      LISTEN_PORT: await freePort(),
      APP_PORT: app.port,
      AUTHZ_PORT_1: authz1.port,
      AUTHZ_PORT_2: authz2.port,
    }),
  );
  base = `http://127.0.0.1:${nginx.port}`;
});

after(async () => {
  await nginx?.stop();
  for (const s of [authz1, authz2, app]) {
    s?.server.closeAllConnections();
    await new Promise((r) => s?.server.close(r));
  }
});

describe('nginx auth_request config', () => {
  it('renders: fills every ${NAME}, keeps nginx variables, refuses a missing value', () => {
    const conf = renderNginxConf({ LISTEN_PORT: 1, APP_PORT: 2, AUTHZ_PORT_1: 3, AUTHZ_PORT_2: 4 });
    assert.doesNotMatch(conf, /\$\{[A-Z]/);
    assert.match(conf, /listen 127\.0\.0\.1:1;/);
    assert.match(conf, /server 127\.0\.0\.1:3 /);
    assert.match(conf, /server 127\.0\.0\.1:4 /);
    assert.match(conf, /\$upstream_http_x_user_id/);
    assert.match(conf, /^\s*auth_request \/_authz;/m);
    assert.doesNotMatch(conf, /^\s*(daemon|user)\s/m, 'the test passes daemon off; no user directive');
    assert.throws(
      () => renderNginxConf({ LISTEN_PORT: 1, APP_PORT: 2, AUTHZ_PORT_1: 3 } as never),
      /no value for AUTHZ_PORT_2/,
    );
  });

  it('allows with a good token and passes X-User-Id and X-Auth-Jti to the app, replacing spoofed ones', async () => {
    clearSeen();
    const res = await fetch(`${base}/api/v1/characters/catalog?x=1`, {
      headers: { authorization: 'Bearer good', 'x-user-id': 'spoofed', 'x-auth-jti': 'spoofed' },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal(app.seen.length, 1);
    assert.equal(app.seen[0]!.headers['x-user-id'], 'u-1');
    assert.equal(app.seen[0]!.headers['x-auth-jti'], 'jti-1');
    assert.equal(app.seen[0]!.url, '/api/v1/characters/catalog?x=1');
    const checks = authzSeen();
    assert.equal(checks.length, 1);
    assert.equal(checks[0]!.headers.authorization, 'Bearer good');
    assert.equal(checks[0]!.headers['x-original-uri'], '/api/v1/characters/catalog?x=1');
    assert.equal(checks[0]!.method, 'GET');
  });

  // nginx makes every auth_request subrequest a GET (ngx_http_subrequest): the
  // client's method reaches ext-authz as X-Original-Method.
  it('sends the method as X-Original-Method and no body to ext-authz; the app gets the body', async () => {
    clearSeen();
    const body = JSON.stringify({ middle_category: 'plastic' });
    const res = await fetch(`${base}/api/v1/characters/match`, {
      method: 'POST',
      headers: { authorization: 'Bearer good', 'content-type': 'application/json' },
      body,
    });
    assert.equal(res.status, 200);
    const [check] = authzSeen();
    assert.equal(check!.method, 'GET');
    assert.equal(check!.headers['x-original-method'], 'POST');
    assert.equal(check!.body, '');
    assert.ok(
      !check!.headers['content-length'] || check!.headers['content-length'] === '0',
      `content-length ${check!.headers['content-length']}`,
    );
    assert.equal(app.seen[0]!.body, body);
  });

  for (const [what, headers, error] of [
    ['no token', {}, 'missing_token'],
    ['a bad token', { authorization: 'Bearer bad' }, 'invalid_token'],
    ['a revoked token', { authorization: 'Bearer revoked' }, 'token_revoked'],
    ['with no x-auth-error', { authorization: 'Bearer old-authz' }, 'unauthorized'],
    ['with an x-auth-error that is not a code', { authorization: 'Bearer odd' }, 'unauthorized'],
  ] as const) {
    it(`denies ${what}: 401, ext-authz's WWW-Authenticate, {"error":"${error}"}, the app never sees it`, async () => {
      clearSeen();
      const res = await fetch(`${base}/api/v1/users/u-1/characters`, { headers });
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), WWW_AUTHENTICATE);
      assert.equal(res.headers.get('content-type'), 'application/json');
      assert.deepEqual(await res.json(), { error });
      assert.equal(app.seen.length, 0);
      assert.equal(authzSeen().length, 1);
    });
  }

  it('passes a 40 KiB header through to ext-authz and the app', async () => {
    clearSeen();
    const big = 'b'.repeat(40 * 1024);
    const res = await fetch(`${base}/big`, { headers: { authorization: 'Bearer good', 'x-big': big } });
    assert.equal(res.status, 200);
    assert.equal(authzSeen()[0]!.headers['x-big'], big);
    assert.equal(app.seen[0]!.headers['x-big'], big);
  });

  it('balances checks over both ext-authz instances', async () => {
    clearSeen();
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${base}/rr/${i}`, { headers: { authorization: 'Bearer good' } });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    assert.ok(authz1.seen.length >= 3, `instance 1 got ${authz1.seen.length} of 10`);
    assert.ok(authz2.seen.length >= 3, `instance 2 got ${authz2.seen.length} of 10`);
  });

  it('lets login through without a check, with identity headers blanked', async () => {
    clearSeen();
    const res = await fetch(`${base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-user-id': 'spoofed' },
      body: '{"user_id":"u-1"}',
    });
    assert.equal(res.status, 200);
    assert.equal(authzSeen().length, 0);
    assert.equal(app.seen[0]!.headers['x-user-id'], undefined);
  });

  it('fails closed with 503 when ext-authz errors', async () => {
    clearSeen();
    authzMode.value = 'error';
    try {
      const res = await fetch(`${base}/x`, { headers: { authorization: 'Bearer good' } });
      assert.equal(res.status, 503);
      assert.deepEqual(await res.json(), { error: 'authz_unavailable' });
      assert.equal(app.seen.length, 0);
    } finally {
      authzMode.value = 'normal';
    }
  });

  it('keeps answering when one ext-authz instance is down (retried on the other)', async () => {
    const closedPort = await freePort();
    const second = await startNginx(
      renderNginxConf({
        LISTEN_PORT: await freePort(),
        APP_PORT: app.port,
        AUTHZ_PORT_1: authz1.port,
        AUTHZ_PORT_2: closedPort,
      }),
    );
    try {
      clearSeen();
      for (let i = 0; i < 6; i++) {
        const res = await fetch(`http://127.0.0.1:${second.port}/x/${i}`, {
          headers: { authorization: 'Bearer good' },
        });
        assert.equal(res.status, 200, second.errorLog());
        await res.arrayBuffer();
      }
      assert.equal(authz1.seen.length, 6);
    } finally {
      await second.stop();
    }
  });
});
