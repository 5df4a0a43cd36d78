// The authz bench's do-nothing servers, a child process of their own: a bare
// node:http server answering 200 with the two allow headers; a gRPC server on
// src/http/h2 (what ext-authz runs on) answering a fixed OK, the same
// CheckResponse bytes ext-authz sends for the bench's token; and the leanest
// node:http2 gRPC server answering the same. No token read, no lookup, no
// deadline, no refusal: what each transport itself costs per request.
//
//   PORT=.. GRPC_PORT=.. HTTP2_PORT=.. CEILING_SUB=.. CEILING_JTI=.. node --import tsx bench/authz-ceiling.ts
import { createServer } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type { ServerHttp2Stream } from 'node:http2';
import { encodeHeaders } from '../src/http/h2/hpack.ts';
import { H2Server } from '../src/http/h2/server.ts';
import { checkResponseFrame } from '../src/services/ext-authz/check-wire.ts';

const sub = process.env.CEILING_SUB ?? 'bench';
const jti = process.env.CEILING_JTI ?? 'bench-jti';

const http = createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'x-user-id': sub, 'x-auth-jti': jti, 'content-length': 0 });
  res.end();
});
http.keepAliveTimeout = 65_000;
await new Promise<void>((resolve) => http.listen(Number(process.env.PORT), '127.0.0.1', resolve));

const ALLOW = checkResponseFrame({ allow: true, sub, jti });
const HEADERS = { ':status': 200, 'content-type': 'application/grpc' };
const TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
const ignore = (): void => undefined;
function trailers(this: ServerHttp2Stream): void {
  this.sendTrailers(TRAILERS);
}
function answer(this: ServerHttp2Stream): void {
  this.respond(HEADERS, { waitForTrailers: true });
  this.on('wantTrailers', trailers);
  this.end(ALLOW);
}
const http2 = createHttp2Server();
http2.on('stream', (stream) => {
  stream.on('error', ignore);
  stream.on('data', ignore); // the request, unread
  stream.on('end', answer);
});
await new Promise<void>((resolve) => http2.listen(Number(process.env.HTTP2_PORT), '127.0.0.1', resolve));

const HEAD_BLOCK = encodeHeaders([
  [':status', '200'],
  ['content-type', 'application/grpc'],
]);
const TRAILER_BLOCK = encodeHeaders([
  ['grpc-status', '0'],
  ['grpc-message', 'OK'],
]);
const grpc = new H2Server((stream) => {
  stream.onend = () => stream.respond(HEAD_BLOCK, ALLOW, TRAILER_BLOCK); // the request, unread
});
await grpc.listen(Number(process.env.GRPC_PORT), '127.0.0.1');

process.stdout.write('ceiling running\n');
await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
http.closeAllConnections();
http.close();
http2.close();
await grpc.close(100);
process.exit(0);
