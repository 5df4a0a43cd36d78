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

/**
 * A cursor over one request. After `next(end)`: `field` and `type` of the
 * field read, and for a length-delimited one `pos` at its start and `to` at
 * its end (other fields are skipped). One per request, no closure per field:
 * this runs on every check.
 */
class Reader {
  pos = 0;
  field = 0;
  type = 0;
  to = 0;
  #value = 0;

  constructor(readonly buf: Buffer) {}

  /** Reads a varint; false when truncated or longer than 10 bytes. */
  #varint(end: number): boolean {
    const buf = this.buf;
    let value = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) return false;
      const b = buf[this.pos++]!;
      // Past 2^53 precision is lost, which only matters for values the check never reads.
      value += (b & 0x7f) * mul;
      if (b < 0x80) {
        this.#value = value;
        return true;
      }
      mul *= 128;
    }
    return false;
  }

  /**
   * Reads the next field before `end`; false when malformed (a truncated
   * field, a length past the end, field 0, a group: proto3 has none).
   */
  next(end: number): boolean {
    if (!this.#varint(end)) return false;
    const tag = this.#value;
    this.field = Math.floor(tag / 8);
    this.type = tag & 7;
    if (this.field === 0) return false;
    switch (this.type) {
      case VARINT:
        return this.#varint(end);
      case I64:
        return (this.pos += 8) <= end;
      case I32:
        return (this.pos += 4) <= end;
      case LEN:
        if (!this.#varint(end) || this.#value > end - this.pos) return false;
        this.to = this.pos + this.#value;
        return true;
      default:
        return false;
    }
  }

  /** After a length-delimited field: past its end. */
  skip(): void {
    this.pos = this.to;
  }
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
  /** From `header_map` (Envoy's encode_raw_headers): each value, joined as Envoy joins repeated headers. */
  fromRaw: string[] | undefined;
}

/**
 * A header as {1: key, 2: value} (a `headers` map entry; either may be
 * absent, then "") or {1: key, 2: value, 3: raw_value} (a HeaderValue of
 * `header_map`, where encode_raw_headers fills raw_value). Only the
 * authorization value is decoded.
 */
function header(r: Reader, end: number, found: Found, raw: boolean): boolean {
  let isAuth = false;
  let value = -1;
  let valueEnd = -1;
  let rawValue = -1;
  let rawEnd = -1;
  while (r.pos < end) {
    if (!r.next(end)) return false;
    if (r.type !== LEN) continue;
    if (r.field === 1) isAuth = isAuthorization(r.buf, r.pos, r.to);
    else if (r.field === 2) [value, valueEnd] = [r.pos, r.to];
    else if (r.field === 3 && raw) [rawValue, rawEnd] = [r.pos, r.to];
    r.skip();
  }
  if (!isAuth) return true;
  if (!raw) {
    found.fromMap = value < 0 ? '' : r.buf.toString('utf8', value, valueEnd);
  } else {
    const text =
      rawValue >= 0
        ? r.buf.toString('utf8', rawValue, rawEnd)
        : value >= 0
          ? r.buf.toString('utf8', value, valueEnd)
          : '';
    (found.fromRaw ??= []).push(text);
  }
  return true;
}

/**
 * The path to the header, one level per field number: CheckRequest.attributes = 1,
 * AttributeContext.request = 4, Request.http = 2; then HttpRequest.headers = 3
 * (map entries) or header_map = 13 (HeaderMap.headers = 1). Unknown fields and
 * the other fields' contents are skipped unread.
 */
const PATH = [1, 4, 2] as const;
const HEADERS = 3;
const HEADER_MAP = 13;
const HEADER_MAP_HEADERS = 1;

/**
 * Walks the message in [r.pos, end) at `depth` of PATH. A message field
 * present twice is merged, as protobuf does: both are walked, in order.
 */
function walk(r: Reader, end: number, depth: number, found: Found): boolean {
  while (r.pos < end) {
    if (!r.next(end)) return false;
    if (r.type !== LEN) continue;
    const to = r.to;
    let ok = true;
    if (depth < PATH.length) {
      if (r.field === PATH[depth]) ok = walk(r, to, depth + 1, found);
    } else if (depth === PATH.length) {
      if (r.field === HEADERS) ok = header(r, to, found, false);
      else if (r.field === HEADER_MAP) ok = walk(r, to, depth + 1, found);
    } else if (r.field === HEADER_MAP_HEADERS) {
      ok = header(r, to, found, true);
    }
    if (!ok) return false;
    r.pos = to;
  }
  return true;
}

/**
 * The authorization header of a CheckRequest
 * (attributes.request.http.headers, else .header_map), `undefined` when
 * absent, or MALFORMED. Envoy lower-cases header names.
 */
export function readAuthorization(buf: Buffer): string | undefined | typeof MALFORMED {
  const found: Found = { fromMap: undefined, fromRaw: undefined };
  if (!walk(new Reader(buf), buf.length, 0, found)) return MALFORMED;
  return found.fromMap ?? found.fromRaw?.join(',');
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
