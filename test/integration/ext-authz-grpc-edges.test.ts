// The gRPC Check server's edges, against a stub authorizer (no Redis, no
// broker): the wire bytes grpc-js and protobufjs read and wrote, deadlines,
// cancellation, keepalive pings, refusals, and the graceful close. A grpc-js
// client where it can say what happened, raw node:http2 where only the
// frames can.
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { connect, constants } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders } from 'node:http2';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Authorizer } from '../../src/services/ext-authz/authorizer.ts';
import {
  encodeCheckResponse,
  grpcFrame,
  MALFORMED,
  readAuthorization,
} from '../../src/services/ext-authz/check-wire.ts';
import type { AuthzDecision } from '../../src/services/ext-authz/decision.ts';
import { authorizationService } from '../../src/services/ext-authz/envoy-protos.ts';
import { AuthzGrpcServer, CHECK_PATH, MAX_MESSAGE_BYTES } from '../../src/services/ext-authz/grpc-server.ts';

interface MethodDefinition {
  requestSerialize(value: unknown): Buffer;
  requestDeserialize(bytes: Buffer): unknown;
  responseSerialize(value: unknown): Buffer;
  responseDeserialize(bytes: Buffer): CheckResponse;
}
interface CheckResponse {
  status: { code: number; message?: string };
  ok_response?: { headers: Array<{ header: { key: string; value: string } }> };
  denied_response?: {
    status: { code: number };
    body: string;
    headers: Array<{ header: { key: string; value: string } }>;
  };
}
type CheckClient = grpc.Client & {
  Check(
    req: unknown,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res: CheckResponse) => void,
  ): grpc.ClientUnaryCall;
};

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const GRPC_CHECK = new URL('../interop/grpc_check.py', import.meta.url).pathname;

const Client = authorizationService();
const method = (Client.service as unknown as { Check: MethodDefinition }).Check;

const ALLOW: AuthzDecision = { allow: true, sub: 'erin', jti: 'j-1' };
const CHALLENGE = 'Bearer error="invalid_token"';

/** What the check is asked, and how it answers: `pending` holds the answers not yet given. */
class StubAuthorizer {
  seen: Array<string | undefined> = [];
  /** When set, the next checks wait for `release`. */
  hold = false;
  pending: Array<(d: AuthzDecision) => void> = [];

  check(authorization: string | undefined): AuthzDecision | Promise<AuthzDecision> {
    this.seen.push(authorization);
    const decision: AuthzDecision =
      authorization === 'Bearer good' ? ALLOW : { allow: false, reason: 'invalid_token' };
    if (!this.hold) return decision;
    return new Promise((resolve) => this.pending.push(() => resolve(decision)));
  }

  release(): void {
    for (const resolve of this.pending.splice(0)) resolve(ALLOW);
  }
}

function checkRequest(headers: Record<string, string>): Buffer {
  return method.requestSerialize({
    attributes: { request: { http: { headers, method: 'GET', path: '/api' } } },
  });
}

interface RawAnswer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
  /** grpc-status from the trailers, or from the headers of a trailers-only answer. */
  status: number;
  message: string;
}

/** One raw HTTP/2 call; `body` is written as is, then the stream ended unless `end` is false. */
function rawCall(
  session: ClientHttp2Session,
  body: Buffer | undefined,
  headers: Record<string, string> = {},
  end = true,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': CHECK_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (head = h));
    stream.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('close', () => {
      const status = trailers['grpc-status'] ?? head['grpc-status'];
      const message = trailers['grpc-message'] ?? head['grpc-message'];
      resolve({
        headers: head,
        trailers,
        body: Buffer.concat(chunks),
        status: status === undefined ? -1 : Number(status),
        message: decodeURIComponent(String(message ?? '')),
      });
    });
    if (body) stream.write(body);
    if (end) stream.end();
  });
}

describe('ext-authz gRPC: the wire format', () => {
  it('answers with the bytes protobufjs wrote for the same CheckResponse', () => {
    const header = (key: string, value: string) => ({ header: { key, value } });
    const allow = method.responseSerialize({
      status: { code: 0 },
      ok_response: { headers: [header('x-user-id', 'erin'), header('x-auth-jti', 'j-1')] },
    });
    assert.deepEqual(encodeCheckResponse(ALLOW), allow);
    for (const reason of ['missing_token', 'invalid_token', 'token_revoked'] as const) {
      const deny = method.responseSerialize({
        status: { code: 16, message: reason },
        denied_response: {
          status: { code: 401 },
          headers: [header('www-authenticate', CHALLENGE), header('content-type', 'application/json')],
          body: JSON.stringify({ error: reason }),
        },
      });
      assert.deepEqual(encodeCheckResponse({ allow: false, reason }), deny, reason);
    }
  });

  it('reads the authorization header as protobufjs decodes it', () => {
    assert.equal(readAuthorization(checkRequest({ authorization: 'Bearer x', ':path': '/a' })), 'Bearer x');
    assert.equal(readAuthorization(checkRequest({ ':path': '/a' })), undefined);
    assert.equal(readAuthorization(checkRequest({ authorization: '' })), '');
    assert.equal(readAuthorization(Buffer.alloc(0)), undefined);
    // Names are exact: Envoy lower-cases them, and the old server read `headers.authorization`.
    assert.equal(readAuthorization(checkRequest({ Authorization: 'Bearer x' })), undefined);
    // Every other field is skipped, whatever its wire type.
    const busy = method.requestSerialize({
      attributes: {
        source: { address: { socket_address: { address: '10.0.0.1', port_value: 4242 } } },
        request: {
          time: { seconds: 1700000000, nanos: 5 },
          http: { id: '7', size: 12, headers: { a: 'b', authorization: 'Bearer y', z: 'w' }, body: 'x' },
        },
        context_extensions: { k: 'v' },
      },
    });
    assert.equal(readAuthorization(busy), 'Bearer y');
    // A map entry seen twice: the last wins, as protobufjs decodes it.
    const twice = Buffer.concat([
      checkRequest({ authorization: 'Bearer 1' }),
      checkRequest({ authorization: 'Bearer 2' }),
    ]);
    const decoded = method.requestDeserialize(twice) as {
      attributes: { request: { http: { headers: Record<string, string> } } };
    };
    assert.equal(readAuthorization(twice), decoded.attributes.request.http.headers.authorization);
  });

  it('reads header_map when Envoy sends raw headers (encode_raw_headers)', () => {
    const raw = method.requestSerialize({
      attributes: {
        request: {
          http: {
            header_map: {
              headers: [
                { key: ':path', raw_value: Buffer.from('/a') },
                { key: 'authorization', raw_value: Buffer.from('Bearer raw') },
              ],
            },
          },
        },
      },
    });
    assert.equal(readAuthorization(raw), 'Bearer raw');
  });

  it('refuses malformed protobuf, with bounds checked', () => {
    const good = checkRequest({ authorization: 'Bearer x' });
    for (let cut = 1; cut < good.length; cut++) {
      const r = readAuthorization(good.subarray(0, cut));
      assert.ok(r === MALFORMED || r === undefined || typeof r === 'string', `cut at ${cut}`);
    }
    assert.equal(readAuthorization(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), MALFORMED);
    assert.equal(readAuthorization(Buffer.from([0x0a, 0x05, 0x01])), MALFORMED);
    assert.equal(
      readAuthorization(
        Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
      ),
      MALFORMED,
    );
    assert.equal(readAuthorization(Buffer.from([0x0b])), MALFORMED, 'a group (wire type 3)');
    assert.equal(readAuthorization(Buffer.from([0x00, 0x00])), MALFORMED, 'field 0');
  });
});

describe('ext-authz gRPC: the server', () => {
  const authorizer = new StubAuthorizer();
  let server: AuthzGrpcServer;
  let target: string;
  let session: ClientHttp2Session;

  before(async () => {
    server = new AuthzGrpcServer(authorizer as unknown as Authorizer);
    target = `127.0.0.1:${await server.listen(0, '127.0.0.1')}`;
    session = connect(`http://${target}`);
    session.on('error', () => undefined);
  });
  after(async () => {
    session.destroy();
    await server.close(100);
  });

  function client(options: grpc.ChannelOptions = {}): CheckClient {
    return new Client(target, grpc.credentials.createInsecure(), options) as unknown as CheckClient;
  }
  function check(
    c: CheckClient,
    authorization: string,
    options: grpc.CallOptions = {},
  ): Promise<CheckResponse> {
    return new Promise((resolve, reject) =>
      c.Check({ attributes: { request: { http: { headers: { authorization } } } } }, options, (err, res) =>
        err ? reject(err) : resolve(res),
      ),
    );
  }

  it('answers a grpc-js client: OK with headers, UNAUTHENTICATED with a 401', async () => {
    const c = client();
    try {
      const ok = await check(c, 'Bearer good');
      assert.equal(ok.status.code, 0);
      assert.deepEqual(
        ok.ok_response!.headers.map((h) => [h.header.key, h.header.value]),
        [
          ['x-user-id', 'erin'],
          ['x-auth-jti', 'j-1'],
        ],
      );
      const denied = await check(c, 'Bearer bad');
      assert.equal(denied.status.code, 16);
      assert.equal(denied.denied_response!.status.code, 401);
      assert.equal(denied.denied_response!.body, '{"error":"invalid_token"}');
    } finally {
      c.close();
    }
  });

  it('answers application/grpc with the message, then grpc-status 0 in trailers', async () => {
    const res = await rawCall(session, grpcFrame(checkRequest({ authorization: 'Bearer good' })));
    assert.equal(res.headers[':status'], 200);
    assert.equal(res.headers['content-type'], 'application/grpc');
    assert.equal(res.trailers['grpc-status'], '0');
    assert.deepEqual(res.body, grpcFrame(encodeCheckResponse(ALLOW)));
  });

  it('refuses an unknown method with UNIMPLEMENTED', async () => {
    const res = await rawCall(session, grpcFrame(Buffer.alloc(0)), {
      ':path': '/envoy.service.auth.v3.Authorization/Nope',
    });
    assert.equal(res.status, grpc.status.UNIMPLEMENTED);
    const c = client();
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        c.makeUnaryRequest(
          '/envoy.service.auth.v2.Authorization/Check',
          (x: Buffer) => x,
          (x: Buffer) => x,
          Buffer.alloc(0),
          (e) => resolve(e),
        ),
      );
      assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
    } finally {
      c.close();
    }
  });

  it('answers a request that is not gRPC with HTTP 415', async () => {
    const res = await rawCall(session, Buffer.from('{}'), { 'content-type': 'application/json' });
    assert.equal(res.headers[':status'], 415);
  });

  it('refuses malformed, missing, extra and truncated messages', async () => {
    const bad = await rawCall(session, grpcFrame(Buffer.from([0x0a, 0x05, 0x01])));
    assert.equal(bad.status, grpc.status.INVALID_ARGUMENT);
    const none = await rawCall(session, undefined);
    assert.equal(none.status, grpc.status.UNIMPLEMENTED);
    const frame = grpcFrame(checkRequest({ authorization: 'Bearer good' }));
    const two = await rawCall(session, Buffer.concat([frame, frame]));
    assert.equal(two.status, grpc.status.UNIMPLEMENTED);
    const truncated = await rawCall(session, frame.subarray(0, frame.length - 1));
    assert.equal(truncated.status, grpc.status.INTERNAL);
    const shortPrefix = await rawCall(session, frame.subarray(0, 3));
    assert.equal(shortPrefix.status, grpc.status.INTERNAL);
  });

  it('reads a message that arrives a few bytes per DATA frame', async () => {
    const frame = grpcFrame(checkRequest({ authorization: 'Bearer good' }));
    const stream = session.request({
      ':method': 'POST',
      ':path': CHECK_PATH,
      'content-type': 'application/grpc',
    });
    const chunks: Buffer[] = [];
    let trailers: IncomingHttpHeaders = {};
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    const closed = new Promise((resolve) => stream.on('close', resolve));
    // Each write in its own turn of the loop: its own DATA frame.
    for (let at = 0; at < frame.length; at += 3) {
      stream.write(frame.subarray(at, at + 3));
      await new Promise((resolve) => setImmediate(resolve));
    }
    stream.end();
    await closed;
    assert.equal(trailers['grpc-status'], '0');
    assert.deepEqual(Buffer.concat(chunks), grpcFrame(encodeCheckResponse(ALLOW)));
  });

  it('refuses an oversized message from its prefix, before the rest arrives', async () => {
    const prefix = Buffer.from([0, 0, 0, 0, 0]);
    prefix.writeUInt32BE(MAX_MESSAGE_BYTES + 1, 1);
    // The stream stays open: the answer cannot have waited for the message.
    const res = await rawCall(session, prefix, {}, false);
    assert.equal(res.status, grpc.status.RESOURCE_EXHAUSTED);
    const c = client();
    try {
      const big = 'x'.repeat(MAX_MESSAGE_BYTES);
      await assert.rejects(
        check(c, big),
        (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED,
      );
      assert.equal((await check(c, 'Bearer good')).status.code, 0, 'the connection still serves');
    } finally {
      c.close();
    }
  });

  it('refuses compressed messages: UNIMPLEMENTED for an unknown encoding, INTERNAL for a bare flag', async () => {
    const message = checkRequest({ authorization: 'Bearer good' });
    const flagged = grpcFrame(message);
    flagged[0] = 1;
    const gzip = await rawCall(session, flagged, { 'grpc-encoding': 'gzip' });
    assert.equal(gzip.status, grpc.status.UNIMPLEMENTED);
    assert.equal(gzip.headers['grpc-accept-encoding'], 'identity');
    const bare = await rawCall(session, flagged);
    assert.equal(bare.status, grpc.status.INTERNAL);
    const identity = await rawCall(session, grpcFrame(message), { 'grpc-encoding': 'identity' });
    assert.equal(identity.status, grpc.status.OK);
  });

  it('sends DEADLINE_EXCEEDED when grpc-timeout passes before the answer', async () => {
    authorizer.hold = true;
    try {
      const started = Date.now();
      const res = await rawCall(session, grpcFrame(checkRequest({ authorization: 'Bearer good' })), {
        'grpc-timeout': '50m',
      });
      assert.equal(res.status, grpc.status.DEADLINE_EXCEEDED);
      assert.ok(Date.now() - started < 1000, 'answered at the deadline');
      // Waiting for the body counts too.
      const silent = await rawCall(session, undefined, { 'grpc-timeout': '30000u' }, false);
      assert.equal(silent.status, grpc.status.DEADLINE_EXCEEDED);
      authorizer.release(); // the late answers go nowhere
      const bad = await rawCall(session, grpcFrame(Buffer.alloc(0)), { 'grpc-timeout': '1x' });
      assert.equal(bad.status, grpc.status.INTERNAL);
    } finally {
      authorizer.hold = false;
      authorizer.release();
    }
    const c = client();
    try {
      // Envoy's own: a deadline the answer beats.
      const ok = await check(c, 'Bearer good', { deadline: Date.now() + 200 });
      assert.equal(ok.status.code, 0);
    } finally {
      c.close();
    }
  });

  it('drops a call the client cancels (RST_STREAM), and goes on serving', async () => {
    authorizer.hold = true;
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': CHECK_PATH,
        'content-type': 'application/grpc',
      });
      stream.on('error', () => undefined);
      stream.end(grpcFrame(checkRequest({ authorization: 'Bearer good' })));
      await until(() => authorizer.pending.length === 1);
      const closed = new Promise((resolve) => stream.on('close', resolve));
      stream.close(constants.NGHTTP2_CANCEL);
      await closed;
      const c = client();
      try {
        const call = c.Check(
          { attributes: { request: { http: { headers: { authorization: 'Bearer good' } } } } },
          {},
          () => undefined,
        );
        await until(() => authorizer.pending.length === 2);
        const cancelled = new Promise((resolve) => call.on('status', resolve));
        call.cancel();
        assert.equal(((await cancelled) as grpc.StatusObject).code, grpc.status.CANCELLED);
      } finally {
        c.close();
      }
      authorizer.release(); // answers for cancelled calls: written nowhere, no error
    } finally {
      authorizer.hold = false;
    }
    const res = await rawCall(session, grpcFrame(checkRequest({ authorization: 'Bearer good' })));
    assert.equal(res.status, grpc.status.OK);
  });

  it("answers Python's grpcio, whose HTTP/2 and HPACK are gRPC C-core's own, many calls at once", async () => {
    const py = (path: string, ...extra: string[]): Promise<Array<{ code: string; response?: string }>> =>
      run(PYTHON, [
        GRPC_CHECK,
        target,
        path,
        checkRequest({ authorization: 'Bearer good' }).toString('hex'),
        ...extra,
      ]).then(({ stdout }) =>
        stdout
          .trim()
          .split('\n')
          .map((line) => JSON.parse(line) as { code: string; response?: string }),
      );
    const allow = encodeCheckResponse(ALLOW).toString('hex');
    // 3000-byte custom metadata on each call: C-core's encoder indexes it and evicts as it goes.
    const answers = await py(CHECK_PATH, '--calls', '200', '--metadata-bytes', '3000');
    assert.equal(answers.length, 200);
    for (const a of answers) assert.deepEqual(a, { code: 'OK', response: allow });
    const [unknown] = await py('/envoy.service.auth.v3.Authorization/Nope');
    assert.equal(unknown!.code, 'UNIMPLEMENTED');
  });

  it('acks keepalive PINGs, as Envoy and grpc-js send them, between and during calls', async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve, reject) =>
        session.ping(Buffer.from(`envoy-${i}`.padEnd(8)), (err, _ms, payload) => {
          if (err) return reject(err);
          assert.equal(payload.toString(), `envoy-${i}`.padEnd(8));
          resolve();
        }),
      );
    }
    const c = client({
      'grpc.keepalive_time_ms': 50,
      'grpc.keepalive_timeout_ms': 1000,
      'grpc.keepalive_permit_without_calls': 1,
    });
    try {
      assert.equal((await check(c, 'Bearer good')).status.code, 0);
      await new Promise((resolve) => setTimeout(resolve, 400)); // several pings, no call
      assert.equal((await check(c, 'Bearer good')).status.code, 0, 'the same channel still serves');
      assert.equal(c.getChannel().getConnectivityState(false), grpc.connectivityState.READY);
    } finally {
      c.close();
    }
  });
});

describe('ext-authz gRPC: close', () => {
  it('sends GOAWAY, answers the calls in flight, then refuses new connections', async () => {
    const authorizer = new StubAuthorizer();
    const server = new AuthzGrpcServer(authorizer as unknown as Authorizer);
    const port = await server.listen(0, '127.0.0.1');
    const session = connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      authorizer.hold = true;
      const inFlight = rawCall(session, grpcFrame(checkRequest({ authorization: 'Bearer good' })));
      await until(() => authorizer.pending.length === 1);
      const goaway = new Promise((resolve) => session.once('goaway', resolve));
      let closed = false;
      const closing = server.close(5000).then(() => (closed = true));
      await goaway;
      assert.equal(closed, false, 'still draining');
      authorizer.release();
      const res = await inFlight;
      assert.equal(res.status, grpc.status.OK, 'the call in flight was answered');
      await closing;
      const again = connect(`http://127.0.0.1:${port}`);
      const refused = await new Promise<boolean>((resolve) => {
        again.once('error', () => resolve(true));
        again.once('connect', () => resolve(false));
      });
      again.destroy();
      assert.ok(refused, 'no new connection');
      await server.close(); // idempotent
    } finally {
      session.destroy();
    }
  });

  it('drops what is left after the grace period', async () => {
    const authorizer = new StubAuthorizer();
    authorizer.hold = true;
    const server = new AuthzGrpcServer(authorizer as unknown as Authorizer);
    const port = await server.listen(0, '127.0.0.1');
    const session = connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    const stream = session.request({
      ':method': 'POST',
      ':path': CHECK_PATH,
      'content-type': 'application/grpc',
    });
    stream.on('error', () => undefined);
    stream.end(grpcFrame(checkRequest({ authorization: 'Bearer good' })));
    await until(() => authorizer.pending.length === 1);
    const started = Date.now();
    await server.close(100);
    assert.ok(Date.now() - started < 2000, 'closed after the grace period');
    session.destroy();
  });
});

async function until(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
