import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';

/** A JSON answer on plain node:http (the admin port, the dashboard), with its length. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: OutgoingHttpHeaders = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}
