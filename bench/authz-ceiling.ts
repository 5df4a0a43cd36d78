// The authz bench's do-nothing ceiling, a child process of its own: a bare
// node:http server answering 200 with the two allow headers, and the leanest
// node:http2 gRPC server that answers a fixed OK (the same CheckResponse
// bytes ext-authz sends for the bench's token). No token read, no lookup, no
// deadline, no refusal: what node itself costs per request on each transport.
//
//   PORT=.. GRPC_PORT=.. CEILING_SUB=.. CEILING_JTI=.. node --import tsx bench/authz-ceiling.ts
import { createServer } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type { ServerHttp2Stream } from 'node:http2';
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
const grpc = createHttp2Server();
grpc.on('stream', (stream) => {
  stream.on('error', ignore);
  stream.on('data', ignore); // the request, unread
  stream.on('end', answer);
});
await new Promise<void>((resolve) => grpc.listen(Number(process.env.GRPC_PORT), '127.0.0.1', resolve));

process.stdout.write('ceiling running\n');
await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
http.closeAllConnections();
http.close();
grpc.close();
process.exit(0);
