import { performance } from 'node:perf_hooks';
import { encodeHeaders } from '../../http/h2/hpack.ts';
import { H2Server } from '../../http/h2/server.ts';
import type { ServerStream } from '../../http/h2/session.ts';
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

const GRPC_HEAD = [
  [':status', '200'],
  ['content-type', 'application/grpc'],
] as const;
/** The answers' header blocks, encoded once. */
const RESPONSE_HEADERS = encodeHeaders(GRPC_HEAD);
const OK_TRAILERS = encodeHeaders([
  ['grpc-status', '0'],
  ['grpc-message', 'OK'],
]);
const NOT_GRPC = encodeHeaders([[':status', '415']]);
const REVOCATION_UNAVAILABLE: AuthzDecision = { allow: false, reason: 'revocation_unavailable' };
/** grpc-timeout: at most 8 digits and a unit (the gRPC over HTTP/2 spec). */
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
/** How often calls past their grpc-timeout are answered: one timer for all, not one per call. */
const DEADLINE_SWEEP_MS = 5;
/** How long close() lets calls in flight finish by default. */
const DRAIN_GRACE_MS = 5000;

/** One call: the request message as it arrives, and whether it was answered. */
interface Call {
  stream: ServerStream;
  /** What arrived, in `buf[0, bytes)`: the first chunk as it came (most requests fit in one), then a copy. */
  buf: Buffer | undefined;
  owned: boolean;
  bytes: number;
  done: boolean;
  /** performance.now() past which the call is answered DEADLINE_EXCEEDED; 0: none. */
  deadline: number;
}

/** A trailers-only answer: the status in the HEADERS frame that ends the stream, no message. */
function fail(call: Call, code: number, message: string, extra: ReadonlyArray<[string, string]> = []): void {
  if (call.done) return;
  call.done = true;
  call.stream.respond(
    encodeHeaders([
      ...GRPC_HEAD,
      ...extra,
      ['grpc-status', String(code)],
      ['grpc-message', encodeURIComponent(message)],
    ]),
  );
}

function answer(call: Call, decision: AuthzDecision): void {
  if (call.done) return;
  call.done = true;
  // Cancelled by the client (RST_STREAM) or its connection gone: respond() says nothing.
  call.stream.respond(RESPONSE_HEADERS, checkResponseFrame(decision), OK_TRAILERS);
}

/**
 * Appends a chunk. The copy grows by doubling, so a message sent a byte per
 * DATA frame costs linear time, not a join of every chunk so far per chunk.
 */
function append(call: Call, chunk: Buffer): void {
  if (!call.buf) {
    call.buf = chunk;
    call.bytes = chunk.length;
    return;
  }
  const need = call.bytes + chunk.length;
  if (!call.owned || need > call.buf.length) {
    const grown = Buffer.allocUnsafe(
      Math.max(need, Math.min(5 + MAX_MESSAGE_BYTES + 1, call.buf.length * 2)),
    );
    call.buf.copy(grown, 0, 0, call.bytes);
    call.buf = grown;
    call.owned = true;
  }
  chunk.copy(call.buf, call.bytes);
  call.bytes = need;
}

/**
 * `envoy.service.auth.v3.Authorization/Check`, answering exactly as the HTTP
 * service does: gRPC framing, the one header the check reads, and answers
 * encoded once (check-wire.ts), on this project's HTTP/2 server
 * (src/http/h2/): node:http2 alone cost more per call than node:http with
 * the whole HTTP check, so gRPC could not keep up with HTTP on it.
 */
export class AuthzGrpcServer {
  readonly #server: H2Server;
  readonly #authorizer: Authorizer;
  /** Calls with a grpc-timeout, not yet answered. */
  readonly #timed = new Set<Call>();
  #sweeper: NodeJS.Timeout | undefined;

  constructor(authorizer: Authorizer) {
    this.#authorizer = authorizer;
    this.#server = new H2Server((stream) => this.#onStream(stream));
  }

  /** Open connections. */
  get connections(): number {
    return this.#server.connections;
  }

  #onStream(stream: ServerStream): void {
    const contentType = stream.header('content-type');
    if (contentType === undefined || !contentType.startsWith('application/grpc')) {
      // Not gRPC at all: an HTTP answer, as grpc-js gives.
      return stream.respond(NOT_GRPC);
    }
    const call: Call = { stream, buf: undefined, owned: false, bytes: 0, done: false, deadline: 0 };
    const path = stream.header(':path');
    if (path !== CHECK_PATH) {
      return fail(call, GrpcStatus.UNIMPLEMENTED, `The server does not implement the method ${String(path)}`);
    }
    const encoding = stream.header('grpc-encoding');
    if (encoding !== undefined && encoding !== 'identity') {
      // The spec's answer to a compression this server does not take, with the one it does.
      return fail(call, GrpcStatus.UNIMPLEMENTED, `Unsupported grpc-encoding "${encoding}"`, [
        ['grpc-accept-encoding', 'identity'],
      ]);
    }
    const timeout = stream.header('grpc-timeout');
    if (timeout !== undefined) {
      const match = TIMEOUT.exec(timeout);
      if (!match) return fail(call, GrpcStatus.INTERNAL, `Invalid grpc-timeout value "${timeout}"`);
      call.deadline = performance.now() + Number(match[1]) * UNIT_MS[match[2]!]!;
      this.#timed.add(call);
      if (!this.#sweeper) {
        this.#sweeper = setInterval(() => this.#sweep(), DEADLINE_SWEEP_MS);
        this.#sweeper.unref(); // open connections hold the process, not a deadline
      }
    }
    stream.ondata = (chunk) => this.#onData(call, chunk);
    stream.onend = () => this.#onEnd(call);
    stream.onabort = () => {
      call.done = true; // cancelled: a late answer goes nowhere
    };
  }

  /** Answers the calls past their deadline; forgets the answered and the cancelled. */
  #sweep(): void {
    const now = performance.now();
    for (const call of this.#timed) {
      if (call.deadline <= now) fail(call, GrpcStatus.DEADLINE_EXCEEDED, 'Deadline exceeded');
      if (call.done) this.#timed.delete(call);
    }
    if (this.#timed.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #onData(call: Call, chunk: Buffer): void {
    if (call.done) return;
    append(call, chunk);
    // A unary call carries one message; its prefix says how long it is before the rest is buffered.
    if (call.bytes >= 5) {
      const length = call.buf!.readUInt32BE(1);
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
    const frame = call.buf!.subarray(0, call.bytes);
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
    return this.#server.listen(port, host);
  }

  /**
   * Stops accepting, sends every connection a GOAWAY (no new call), lets the
   * calls in flight finish, and after `graceMs` drops whatever connection is
   * left. Idempotent.
   */
  async close(graceMs = DRAIN_GRACE_MS): Promise<void> {
    await this.#server.close(graceMs);
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }
}
