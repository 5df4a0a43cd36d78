/**
 * A delivery's body as bytes. rabbitmq-client parses a body itself
 * (JSON.parse for application/json, toString for text/plain) when it was sent
 * without a content encoding; this turns such a value back into bytes, so a
 * consumer validates (or dead-letters) the same thing whichever way it came.
 */
export function bodyBytes(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body);
  return Buffer.from(JSON.stringify(body ?? null));
}
