import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BusMessage } from '../../src/bus/bus.ts';
import { isCachecastError } from '../../src/errors.ts';
import { encodeEvent, parseEventMessage, SIGNATURE_HEADER } from '../../src/events/codec.ts';

const message = (body: string | Buffer, extra: Partial<BusMessage> = {}): BusMessage => ({
  topic: 't',
  body: Buffer.from(body),
  headers: {},
  contentType: 'application/json',
  ...extra,
});

const rejects = (msg: BusMessage, code: string, secret?: string): void => {
  assert.throws(
    () => parseEventMessage(msg, { maxBytes: 1000, secret }),
    (err: unknown) => isCachecastError(err) && err.code === code,
  );
};

describe('event codec', () => {
  it('encodes the payload with envelope fields, unsigned by default (seed shape)', () => {
    const { body, headers } = encodeEvent(
      { type: 'delete', character_id: 'x' },
      { version: 3, origin: 'pod-1' },
    );
    assert.deepEqual(JSON.parse(body.toString()), {
      type: 'delete',
      character_id: 'x',
      version: 3,
      origin: 'pod-1',
    });
    assert.deepEqual(headers, {});
  });

  it('accepts the seed publisher: no envelope, application/json with utf-8 encoding', () => {
    const parsed = parseEventMessage(message('{"type": "delete", "character_id": "\\u00eb"}'), {
      maxBytes: 1000,
    });
    assert.deepEqual(parsed, { type: 'delete', character_id: 'ë' });
    parseEventMessage(message('{"type":"x"}', { contentType: undefined }), { maxBytes: 1000 });
  });

  it('rejects bad input with stable codes', () => {
    rejects(message('x'.repeat(1001)), 'EVENT_TOO_LARGE');
    rejects(message('{"type":"x"}', { contentType: 'text/plain' }), 'EVENT_BAD_CONTENT_TYPE');
    rejects(message('{"type":'), 'EVENT_BAD_JSON');
    rejects(message(Buffer.from([0xff, 0xfe, 0x00])), 'EVENT_BAD_JSON');
    rejects(message('"just a string"'), 'EVENT_BAD_SHAPE');
    rejects(message('null'), 'EVENT_BAD_SHAPE');
    rejects(message('{"no":"type"}'), 'EVENT_BAD_SHAPE');
    rejects(message('{"type":"x","version":1.5}'), 'EVENT_BAD_SHAPE');
    rejects(message('{"type":"x","version":"2"}'), 'EVENT_BAD_SHAPE');
    rejects(message('{"type":"x","published_at":"yesterday"}'), 'EVENT_BAD_SHAPE');
    rejects(message('{"type":"x","origin":5}'), 'EVENT_BAD_SHAPE');
  });

  it('signs with HMAC-SHA256 and verifies against the exact bytes', () => {
    const secret = 'sixteen-chars-secret';
    const { body, headers } = encodeEvent({ type: 'x' }, { version: 1 }, secret);
    assert.match(headers[SIGNATURE_HEADER]!, /^sha256=[0-9a-f]{64}$/);
    assert.deepEqual(parseEventMessage(message(body, { headers }), { maxBytes: 1000, secret }), {
      type: 'x',
      version: 1,
    });
    rejects(message(body), 'EVENT_UNSIGNED', secret);
    const tampered = Buffer.from(body.toString().replace('1', '2'));
    rejects(message(tampered, { headers }), 'EVENT_BAD_SIGNATURE', secret);
    rejects(message(body, { headers: { [SIGNATURE_HEADER]: 'sha256=00' } }), 'EVENT_BAD_SIGNATURE', secret);
  });
});
