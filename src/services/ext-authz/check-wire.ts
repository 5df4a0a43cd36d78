// The protobuf wire format of envoy.service.auth.v3.CheckRequest and
// CheckResponse, for the few fields the check reads and writes. A general
// decoder builds the whole request (peers, every header, metadata) only for
// the check to read one header: this reads that header and skips the rest.
// Field numbers: envoy/service/auth/v3/{external_auth,attribute_context}.proto,
// envoy/config/core/v3/base.proto, envoy/type/v3/http_status.proto and
// google/rpc/status.proto (as shipped by @grpc/grpc-js-xds).
import { INVALID_TOKEN_CHALLENGE } from '../../auth/jwt/bearer.ts';
import type { AuthzDecision, DenyReason } from './decision.ts';

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** The request is not valid protobuf (a truncated field, a bad length, a group, an overlong varint). */
export const MALFORMED = Symbol('malformed');

/** google.rpc.Code values Envoy reads from CheckResponse.status. */
const OK = 0;
const UNAUTHENTICATED = 16;
/** envoy.type.v3.StatusCode.Unauthorized */
const HTTP_UNAUTHORIZED = 401;

/** Reads a varint at `pos`; returns the value and the next position, or -1 when malformed. Lengths fit 2^31. */
class Reader {
  pos: number;
  value = 0;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** Reads a varint into `value`; false when truncated or longer than 10 bytes. */
  varint(): boolean {
    const { buf, end } = this;
    let value = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) return false;
      const b = buf[this.pos++]!;
      // Past 2^53 precision is lost, which only matters for values the check never reads.
      value += (b & 0x7f) * mul;
      if (b < 0x80) {
        this.value = value;
        return true;
      }
      mul *= 128;
    }
    return false;
  }

  /** Reads a length prefix; false unless the bytes it announces are all there. */
  length(): boolean {
    return this.varint() && this.value <= this.end - this.pos;
  }

  /** Skips the value of a field of wire type `type`; false when malformed (groups included: proto3 has none). */
  skip(type: number): boolean {
    switch (type) {
      case VARINT:
        return this.varint();
      case I64:
        return (this.pos += 8) <= this.end;
      case LEN:
        if (!this.length()) return false;
        this.pos += this.value;
        return true;
      case I32:
        return (this.pos += 4) <= this.end;
      default:
        return false;
    }
  }
}

/**
 * Walks the fields of the message in `buf[start, end)`, calling `onLen` for
 * each length-delimited field numbered in `wanted` and skipping the others.
 * A message field present twice is merged, as protobuf does: the callbacks
 * see both, in order.
 */
function walk(
  buf: Buffer,
  start: number,
  end: number,
  onLen: (field: number, from: number, to: number) => boolean,
): boolean {
  const r = new Reader(buf, start, end);
  while (r.pos < end) {
    if (!r.varint()) return false;
    const tag = r.value;
    const field = Math.floor(tag / 8);
    const type = tag & 7;
    if (field === 0) return false;
    if (type === LEN) {
      if (!r.length()) return false;
      const from = r.pos;
      r.pos += r.value;
      if (!onLen(field, from, r.pos)) return false;
    } else if (!r.skip(type)) {
      return false;
    }
  }
  return true;
}

const AUTHORIZATION = Buffer.from('authorization');

function isAuthorization(buf: Buffer, from: number, to: number): boolean {
  return (
    to - from === AUTHORIZATION.length && buf.compare(AUTHORIZATION, 0, AUTHORIZATION.length, from, to) === 0
  );
}

/** What the request says of the authorization header. */
interface Found {
  /** From `headers`, the map Envoy fills by default: the last entry wins, as in a protobuf map. */
  fromMap: string | undefined;
  /** From `header_map` (Envoy's encode_raw_headers): every value, joined as Envoy joins repeated headers. */
  fromRaw: string[];
}

/** A `headers` map entry {1: key, 2: value}: either may be absent (then ""). */
function mapEntry(buf: Buffer, from: number, to: number, found: Found): boolean {
  let isAuth = false;
  let value = '';
  const ok = walk(buf, from, to, (field, a, b) => {
    if (field === 1) isAuth = isAuthorization(buf, a, b);
    else if (field === 2) value = buf.toString('utf8', a, b);
    return true;
  });
  if (ok && isAuth) found.fromMap = value;
  return ok;
}

/** A config.core.v3.HeaderValue {1: key, 2: value, 3: raw_value}: raw_value is what encode_raw_headers fills. */
function headerValue(buf: Buffer, from: number, to: number, found: Found): boolean {
  let isAuth = false;
  let value: string | undefined;
  let raw: string | undefined;
  const ok = walk(buf, from, to, (field, a, b) => {
    if (field === 1) isAuth = isAuthorization(buf, a, b);
    else if (field === 2) value = buf.toString('utf8', a, b);
    else if (field === 3) raw = buf.toString('utf8', a, b);
    return true;
  });
  if (ok && isAuth) found.fromRaw.push(raw ?? value ?? '');
  return ok;
}

/**
 * The authorization header of a CheckRequest
 * (attributes[1].request[4].http[2].headers[3], else .header_map[13].headers[1]),
 * `undefined` when absent, or MALFORMED. Envoy lower-cases header names.
 */
export function readAuthorization(buf: Buffer): string | undefined | typeof MALFORMED {
  const found: Found = { fromMap: undefined, fromRaw: [] };
  const httpRequest = (field: number, a: number, b: number): boolean =>
    field === 3
      ? mapEntry(buf, a, b, found)
      : field === 13
        ? walk(buf, a, b, (f, c, d) => (f === 1 ? headerValue(buf, c, d, found) : true))
        : true;
  const request = (field: number, a: number, b: number): boolean =>
    field === 2 ? walk(buf, a, b, httpRequest) : true;
  const attributes = (field: number, a: number, b: number): boolean =>
    field === 4 ? walk(buf, a, b, request) : true;
  const ok = walk(buf, 0, buf.length, (field, a, b) => (field === 1 ? walk(buf, a, b, attributes) : true));
  if (!ok) return MALFORMED;
  if (found.fromMap !== undefined) return found.fromMap;
  return found.fromRaw.length > 0 ? found.fromRaw.join(',') : undefined;
}

// ---------------------------------------------------------------- encoding

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** Tag and length prefix of a length-delimited field. */
function len(field: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([(field << 3) | LEN, ...varint(body.length)]), body]);
}

const str = (field: number, value: string): Buffer => len(field, Buffer.from(value, 'utf8'));
const int = (field: number, value: number): Buffer => Buffer.from([(field << 3) | VARINT, ...varint(value)]);

/** HeaderValueOption {1: HeaderValue {1: key, 2: value}}. */
const headerOption = (field: number, key: string, value: string): Buffer =>
  len(field, len(1, Buffer.concat([str(1, key), str(2, value)])));

/**
 * The CheckResponse message for a decision, field by field in declaration
 * order, zero codes written out: the bytes protobufjs wrote for the
 * grpc-js server this replaces (the tests compare them).
 */
export function encodeCheckResponse(decision: AuthzDecision): Buffer {
  if (decision.allow) {
    return Buffer.concat([
      len(1, int(1, OK)),
      len(
        3,
        Buffer.concat([
          headerOption(2, 'x-user-id', decision.sub),
          headerOption(2, 'x-auth-jti', decision.jti),
        ]),
      ),
    ]);
  }
  // A deny is a successful RPC with a non-zero status; a failed RPC is an error at Envoy.
  return Buffer.concat([
    len(1, Buffer.concat([int(1, UNAUTHENTICATED), str(2, decision.reason)])),
    len(
      2,
      Buffer.concat([
        len(1, int(1, HTTP_UNAUTHORIZED)),
        headerOption(2, 'www-authenticate', INVALID_TOKEN_CHALLENGE),
        headerOption(2, 'content-type', 'application/json'),
        str(3, JSON.stringify({ error: decision.reason })),
      ]),
    ),
  ]);
}

/** A gRPC length-prefixed message: flag 0 (uncompressed), 4-byte big-endian length, the message. */
export function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

const DENY_FRAMES = new Map<DenyReason, Buffer>();
const ALLOW_FRAMES = new Map<string, Buffer>();
/** Distinct (sub, jti) answers kept: a token is checked many times over its life, then never again. */
const ALLOW_CACHE_MAX = 4096;

/** The framed answer for a decision; encoded once per distinct answer. */
export function checkResponseFrame(decision: AuthzDecision): Buffer {
  if (!decision.allow) {
    let frame = DENY_FRAMES.get(decision.reason);
    if (!frame) DENY_FRAMES.set(decision.reason, (frame = grpcFrame(encodeCheckResponse(decision))));
    return frame;
  }
  const key = `${decision.sub}\n${decision.jti}`;
  let frame = ALLOW_FRAMES.get(key);
  if (!frame) {
    if (ALLOW_FRAMES.size >= ALLOW_CACHE_MAX) ALLOW_FRAMES.clear();
    ALLOW_FRAMES.set(
      key,
      (frame = grpcFrame(encodeCheckResponse({ allow: true, sub: decision.sub, jti: decision.jti }))),
    );
  }
  return frame;
}
