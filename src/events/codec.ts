import { createHmac, timingSafeEqual } from 'node:crypto';
import { CachecastError } from '../errors.ts';
import type { EventEnvelope } from './event.ts';

/** Header carrying the HMAC-SHA256 of the body when CACHE_EVENT_SECRET is set. */
export const SIGNATURE_HEADER = 'x-cachecast-signature';

export interface EncodedEvent {
  body: Buffer;
  headers: Record<string, string>;
}

export function sign(body: Buffer, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Serializes an event (payload plus envelope fields) and signs it when a secret is given. */
export function encodeEvent(
  payload: Record<string, unknown>,
  envelope: EventEnvelope,
  secret?: string,
): EncodedEvent {
  const body = Buffer.from(JSON.stringify({ ...payload, ...envelope }));
  return { body, headers: secret ? { [SIGNATURE_HEADER]: sign(body, secret) } : {} };
}

/** What the codec reads of a delivered message (the bus's BusMessage has this shape). */
export interface EventMessage {
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly contentType: string | undefined;
}

/** A parsed event: its type and envelope checked, the payload still raw. */
export interface ParsedEvent extends EventEnvelope {
  type: string;
  [field: string]: unknown;
}

export interface DecodeOptions {
  maxBytes: number;
  secret?: string | undefined;
}

/**
 * Checks size, content type, signature and JSON syntax; returns the parsed
 * object with its envelope fields validated. The dataset checks the rest.
 */
export function parseEventMessage(message: EventMessage, options: DecodeOptions): ParsedEvent {
  if (message.body.length > options.maxBytes) {
    throw new CachecastError(
      'EVENT_TOO_LARGE',
      `event of ${message.body.length} bytes exceeds ${options.maxBytes}`,
    );
  }
  const contentType = message.contentType?.split(';')[0]?.trim().toLowerCase();
  if (contentType && contentType !== 'application/json') {
    throw new CachecastError('EVENT_BAD_CONTENT_TYPE', `content type ${contentType} is not application/json`);
  }
  if (options.secret) {
    const given = message.headers[SIGNATURE_HEADER];
    if (given === undefined) throw new CachecastError('EVENT_UNSIGNED', 'event has no signature');
    const expected = Buffer.from(sign(message.body, options.secret));
    const actual = Buffer.from(
      typeof given === 'string' ? given : Buffer.isBuffer(given) ? given.toString() : '',
    );
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
      throw new CachecastError('EVENT_BAD_SIGNATURE', 'event signature does not match');
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(message.body.toString('utf8'));
  } catch (err) {
    throw new CachecastError('EVENT_BAD_JSON', `event body is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new CachecastError('EVENT_BAD_SHAPE', 'event body is not a JSON object');
  }
  const event = parsed as Record<string, unknown>;
  if (typeof event.type !== 'string')
    throw new CachecastError('EVENT_BAD_SHAPE', 'event has no string "type"');
  checkEnvelope(event);
  return event as ParsedEvent;
}

/** An epoch on the wire: up to 64 letters, digits, '_', '-' or '.' ('' = a source with no epoch yet). */
export function isEpoch(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 64 && /^[A-Za-z0-9_.-]*$/.test(value);
}

function checkEnvelope(event: Record<string, unknown>): void {
  const { version, epoch, published_at, origin } = event;
  if (version !== undefined && (!Number.isSafeInteger(version) || (version as number) < 0)) {
    throw new CachecastError('EVENT_BAD_SHAPE', '"version" must be a non-negative integer');
  }
  if (epoch !== undefined && !isEpoch(epoch)) {
    throw new CachecastError('EVENT_BAD_SHAPE', '"epoch" must be up to 64 letters, digits, "_", "-" or "."');
  }
  if (published_at !== undefined && (typeof published_at !== 'number' || !Number.isFinite(published_at))) {
    throw new CachecastError('EVENT_BAD_SHAPE', '"published_at" must be epoch milliseconds');
  }
  if (origin !== undefined && typeof origin !== 'string') {
    throw new CachecastError('EVENT_BAD_SHAPE', '"origin" must be a string');
  }
}
