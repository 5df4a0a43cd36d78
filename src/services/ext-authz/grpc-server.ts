import { constants, createServer } from 'node:http2';
import type { Http2Server, Http2Session, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Authorizer } from './authorizer.ts';
import type { AuthzDecision } from './decision.ts';
import { checkResponseFrame, MALFORMED, readAuthorization } from './check-wire.ts';

/** The one method served. */
export const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';
/** What grpc-js allowed by default and this server allowed before: larger requests are refused unread. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** grpc status codes (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
} as const;

const { HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_PATH, HTTP2_HEADER_STATUS, NGHTTP2_NO_ERROR } = constants;

const RESPONSE_HEADERS = { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc' };
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
const REVOCATION_UNAVAILABLE: AuthzDecision = { allow: false, reason: 'revocation_unavailable' };
/** grpc-timeout: at most 8 digits and a unit (the gRPC over HTTP/2 spec). */
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
/** How often calls past their grpc-timeout are answered: one timer for all, not one per call. */
const DEADLINE_SWEEP_MS = 5;
const ignore = (): void => undefined;
function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

/** One call: the request message as it arrives, and whether it was answered. */
interface Call {
  stream: ServerHttp2Stream;
  /** The first chunk; most requests arrive in one. */
  first: Buffer | undefined;
  more: Buffer[] | undefined;
  bytes: number;
  done: boolean;
  /** performance.now() past which the call is answered DEADLINE_EXCEEDED; 0: none. */
  deadline: number;
}

/** A trailers-only answer: the status in the HEADERS frame that ends the stream, no message. */
function fail(call: Call, code: number, message: string): void {
  if (call.done) return;
  call.done = true;
  const { stream } = call;
  if (stream.destroyed || stream.headersSent) return;
  stream.respond(
    {
      [HTTP2_HEADER_STATUS]: 200,
      [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      'grpc-status': String(code),
      'grpc-message': encodeURIComponent(message),
    },
    { endStream: true },
  );
  // Whatever the client still sends is not read: a reset tells it to stop.
  if (!stream.readableEnded) stream.close(NGHTTP2_NO_ERROR);
}

function answer(call: Call, decision: AuthzDecision): void {
  if (call.done) return;
  call.done = true;
  const { stream } = call;
  // Cancelled by the client (RST_STREAM) or its connection gone: nothing to say.
  if (stream.destroyed) return;
  stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
  stream.on('wantTrailers', sendOkTrailers);
  stream.end(checkResponseFrame(decision));
}

function received(call: Call): Buffer {
  return call.more ? Buffer.concat([call.first!, ...call.more]) : call.first!;
}

/**
 * `envoy.service.auth.v3.Authorization/Check` on node:http2, answering
 * exactly as the HTTP service does: gRPC framing, the one header the check
 * reads, and answers encoded once (check-wire.ts). Replaces a grpc-js
 * server whose generic machinery (a full protobufjs decode of the request,
 * interceptors, metadata objects) cost more than the node:http2 stream
 * itself.
 */
export class AuthzGrpcServer {
  readonly server: Http2Server;
  readonly #authorizer: Authorizer;
  readonly #sessions = new Set<Http2Session>();
  /** Calls with a grpc-timeout, not yet answered. */
  readonly #timed = new Set<Call>();
  #sweeper: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(authorizer: Authorizer) {
    this.#authorizer = authorizer;
    this.server = createServer();
    this.server.on('session', (session: Http2Session) => {
      this.#sessions.add(session);
      session.on('error', ignore); // a connection reset: its streams are gone, the server goes on
      session.on('close', () => this.#sessions.delete(session));
      // Too late for this one: the listener was closed while it connected.
      if (this.#closing) session.close();
    });
    this.server.on('stream', (stream, headers) => this.#onStream(stream, headers));
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', ignore); // a reset by the peer; the call is abandoned
    const contentType = headers[HTTP2_HEADER_CONTENT_TYPE];
    if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
      // Not gRPC at all: an HTTP answer, as grpc-js gives.
      stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
      stream.close(NGHTTP2_NO_ERROR);
      return;
    }
    const call: Call = { stream, first: undefined, more: undefined, bytes: 0, done: false, deadline: 0 };
    const path = headers[HTTP2_HEADER_PATH];
    if (path !== CHECK_PATH) {
      return fail(call, GrpcStatus.UNIMPLEMENTED, `The server does not implement the method ${String(path)}`);
    }
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      // The spec's answer to a compression this server does not take, with the one it does.
      stream.respond(
        {
          [HTTP2_HEADER_STATUS]: 200,
          [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
          'grpc-accept-encoding': 'identity',
          'grpc-status': String(GrpcStatus.UNIMPLEMENTED),
          'grpc-message': encodeURIComponent(`Unsupported grpc-encoding "${String(encoding)}"`),
        },
        { endStream: true },
      );
      stream.close(NGHTTP2_NO_ERROR);
      return;
    }
    const timeout = headers['grpc-timeout'];
    if (timeout !== undefined) {
      const match = TIMEOUT.exec(timeout as string);
      if (!match) return fail(call, GrpcStatus.INTERNAL, `Invalid grpc-timeout value "${String(timeout)}"`);
      call.deadline = performance.now() + Number(match[1]) * UNIT_MS[match[2]!]!;
      this.#timed.add(call);
      if (!this.#sweeper) {
        this.#sweeper = setInterval(() => this.#sweep(), DEADLINE_SWEEP_MS);
        this.#sweeper.unref(); // open connections hold the process, not a deadline
      }
    }
    stream.on('data', (chunk: Buffer) => this.#onData(call, chunk));
    stream.on('end', () => this.#onEnd(call));
  }

  /** Answers the calls past their deadline; forgets the answered and the cancelled. */
  #sweep(): void {
    const now = performance.now();
    for (const call of this.#timed) {
      if (call.deadline <= now) fail(call, GrpcStatus.DEADLINE_EXCEEDED, 'Deadline exceeded');
      if (call.done || call.stream.destroyed) this.#timed.delete(call);
    }
    if (this.#timed.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #onData(call: Call, chunk: Buffer): void {
    if (call.done) return;
    if (call.first) (call.more ??= []).push(chunk);
    else call.first = chunk;
    call.bytes += chunk.length;
    // A unary call carries one message; its prefix says how long it is before the rest is buffered.
    if (call.bytes >= 5) {
      const length = (call.first.length >= 5 ? call.first : received(call)).readUInt32BE(1);
      if (length > MAX_MESSAGE_BYTES) {
        return fail(
          call,
          GrpcStatus.RESOURCE_EXHAUSTED,
          `Received message larger than max (${length} vs ${MAX_MESSAGE_BYTES})`,
        );
      }
      if (call.bytes > 5 + length) {
        return fail(call, GrpcStatus.UNIMPLEMENTED, `Received a second request message for ${CHECK_PATH}`);
      }
    }
  }

  #onEnd(call: Call): void {
    if (call.done) return;
    if (call.bytes === 0) {
      return fail(call, GrpcStatus.UNIMPLEMENTED, `Received no request message for ${CHECK_PATH}`);
    }
    const frame = received(call);
    if (frame.length < 5 || frame.length !== 5 + frame.readUInt32BE(1)) {
      return fail(call, GrpcStatus.INTERNAL, 'Incomplete message at the end of the stream');
    }
    if (frame[0] !== 0) {
      // Flag 1 needs a grpc-encoding, and identity (or none) was announced: a protocol error.
      return fail(call, GrpcStatus.INTERNAL, 'Compressed message without a grpc-encoding');
    }
    const authorization = readAuthorization(frame.subarray(5));
    if (authorization === MALFORMED) {
      return fail(call, GrpcStatus.INVALID_ARGUMENT, 'Error deserializing request: invalid CheckRequest');
    }
    const decision = this.#authorizer.check(authorization, 'grpc');
    if (decision instanceof Promise) {
      decision.then(
        (d) => answer(call, d),
        () => answer(call, REVOCATION_UNAVAILABLE),
      );
    } else {
      answer(call, decision);
    }
  }

  /** Binds; resolves with the bound port (`0` picks a free one), rejects on EADDRINUSE. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /**
   * Stops accepting, sends every connection a GOAWAY (no new call), lets the
   * calls in flight finish, and after `graceMs` drops whatever connection is
   * left. Idempotent.
   */
  close(graceMs = 5000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      for (const session of this.#sessions) session.close();
      if (!this.server.listening && this.#sessions.size === 0) return resolve();
      const force = setTimeout(() => {
        for (const session of this.#sessions) session.destroy();
      }, graceMs);
      force.unref();
      // Resolves once the listener is closed and every session has ended.
      this.server.close(() => {
        clearTimeout(force);
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
        resolve();
      });
    });
    return this.#closing;
  }
}
