// src/http/h2, the HTTP/2 server ext-authz's gRPC runs on: against a real
// client (node:http2, whose encoder is nghttp2's, as Envoy's and h2load's
// are) for HPACK, CONTINUATION and flow control both ways; against h2load
// for many streams at once; and against hand-written frames for every way a
// peer can break the protocol or try to make the server hold too much.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { connect as connectH2, sensitiveHeaders } from 'node:http2';
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  ErrorCode,
  Flag,
  frame,
  FrameType,
  goawayFrame,
  PREFACE,
  rstStreamFrame,
  Setting,
  settingsFrame,
  windowUpdateFrame,
} from '../../src/http/h2/frames.ts';
import { encodeHeaders, HpackDecoder } from '../../src/http/h2/hpack.ts';
import { H2Server } from '../../src/http/h2/server.ts';
import type { ServerStream } from '../../src/http/h2/session.ts';

const run = promisify(execFile);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * Echoes each request: its headers and the body's length and hash as JSON,
 * then `x-answer-bytes` bytes of a known pattern, then trailers. Paths
 * starting /hold are never answered, /now is answered at once (204), and
 * /throw throws.
 */
function echo(stream: ServerStream): void {
  // Answered before the request's end is delivered (as ext-authz refuses an unknown method).
  if (stream.header(':path') === '/now') return stream.respond(encodeHeaders([[':status', '204']]));
  const chunks: Buffer[] = [];
  stream.ondata = (chunk) => chunks.push(Buffer.from(chunk));
  stream.onend = () => {
    if (stream.header(':path')!.startsWith('/hold')) return;
    if (stream.header(':path') === '/throw') throw new Error('a handler bug');
    const body = Buffer.concat(chunks);
    const info = Buffer.from(JSON.stringify({ fields: stream.fields, length: body.length, sha: sha(body) }));
    const extra = pattern(Number(stream.header('x-answer-bytes') ?? 0));
    const head = encodeHeaders([
      [':status', '200'],
      ['x-info-bytes', String(info.length)],
    ]);
    stream.respond(head, Buffer.concat([info, extra]), encodeHeaders([['x-done', 'yes']]));
  };
}

function pattern(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

function seeded(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
}

interface Echoed {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  fields: string[];
  length: number;
  sha: string;
  extra: Buffer;
}

function request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body: Buffer): Promise<Echoed> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ...headers });
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (head = h));
    stream.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => {
      const all = Buffer.concat(chunks);
      const infoBytes = Number(head['x-info-bytes']);
      const info = JSON.parse(all.subarray(0, infoBytes).toString()) as {
        fields: string[];
        length: number;
        sha: string;
      };
      resolve({ headers: head, trailers, ...info, extra: all.subarray(infoBytes) });
    });
    stream.end(body);
  });
}

describe('h2 server: real clients', () => {
  let server: H2Server;
  let port: number;
  before(async () => {
    server = new H2Server(echo);
    port = await server.listen(0, '127.0.0.1');
  });
  after(() => server.close(100));

  it("reads nghttp2's header blocks (dynamic table, evictions, Huffman, never-indexed, CONTINUATION) and both flow-control windows", async () => {
    const session = connectH2(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    const rand = seeded(7);
    const names = ['x-a', 'x-b', 'x-request-id', 'x-long', 'authorization'];
    const text = (n: number): string => {
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(32 + Math.floor(rand() * 95));
      return s;
    };
    try {
      for (let batch = 0; batch < 20; batch++) {
        const calls = Array.from({ length: 10 }, (_, k) => {
          const sent: Array<[string, string]> = [];
          const headers: OutgoingHttpHeaders = { ':path': `/echo/${batch}/${k}` };
          for (const name of names) {
            if (rand() < 0.4) continue;
            // Mostly short and repeated (indexed), sometimes long (evictions), once in a while past one frame.
            const roll = rand();
            const length =
              roll < 0.6 ? 1 + Math.floor(rand() * 4) : roll < 0.97 ? Math.floor(rand() * 900) : 17_000;
            const value = roll < 0.6 ? `v${length}` : text(length).trim();
            headers[name] = value;
            sent.push([name, value]);
          }
          if (rand() < 0.3) (headers as Record<symbol, unknown>)[sensitiveHeaders] = ['authorization'];
          const body = pattern(
            rand() < 0.2 ? 70_000 + Math.floor(rand() * 200_000) : Math.floor(rand() * 2000),
          );
          const answerBytes = rand() < 0.2 ? 70_000 + Math.floor(rand() * 200_000) : Math.floor(rand() * 100);
          headers['x-answer-bytes'] = String(answerBytes);
          return request(session, headers, body).then((res) => {
            const got: Array<[string, string]> = [];
            for (let i = 0; i < res.fields.length; i += 2) {
              const name = res.fields[i]!;
              if (names.includes(name)) got.push([name, res.fields[i + 1]!]);
            }
            assert.deepEqual(
              got.sort((a, b) => a[0].localeCompare(b[0])),
              sent.sort((a, b) => a[0].localeCompare(b[0])),
            );
            assert.equal(res.length, body.length);
            assert.equal(res.sha, sha(body));
            assert.equal(sha(res.extra), sha(pattern(answerBytes)), 'the answer, in order, whole');
            assert.equal(res.trailers['x-done'], 'yes');
          });
        });
        await Promise.all(calls);
      }
    } finally {
      session.destroy();
    }
  });

  it(
    'answers a client whose HPACK table is smaller than the default (a table size update first)',
    { timeout: 10_000 },
    async () => {
      for (const headerTableSize of [0, 1024]) {
        const session = connectH2(`http://127.0.0.1:${port}`, { settings: { headerTableSize } });
        session.on('error', () => undefined);
        try {
          for (let i = 0; i < 3; i++) {
            const res = await request(
              session,
              { ':path': '/echo', 'x-answer-bytes': '10' },
              Buffer.from('hi'),
            );
            assert.equal(res.trailers['x-done'], 'yes', `table ${headerTableSize}, call ${i}`);
          }
        } finally {
          session.destroy();
        }
      }
    },
  );

  it('serves h2load: many connections and streams at once, every request answered', async (t) => {
    if (spawnSync('h2load', ['--version']).status !== 0)
      return t.skip('h2load is not installed (nghttp2-client)');
    const dir = mkdtempSync(join(tmpdir(), 'h2load-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const body = join(dir, 'body');
    writeFileSync(body, pattern(300));
    // Not spawnSync: the server under test runs in this process.
    const { stdout } = await run('h2load', [
      ...['-n', '20000', '-c', '8', '-m', '32', '-d', body, '-H', 'x-answer-bytes: 100'],
      `http://127.0.0.1:${port}/echo`,
    ]);
    const summary =
      /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(
        stdout,
      );
    assert.ok(summary, stdout);
    assert.equal(summary[4], '20000', stdout);
    assert.equal(summary[5], '0');
    assert.equal(summary[6], '0');
  });
});

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** A client written frame by frame, to send what no real client would. */
class RawClient {
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  #buf = Buffer.alloc(0);

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  static async open(port: number, hello = true): Promise<RawClient> {
    const socket = connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const client = new RawClient(socket);
    if (hello) client.send(PREFACE, settingsFrame([]));
    return client;
  }

  send(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }

  #read(chunk: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    while (this.#buf.length >= 9) {
      const length = this.#buf.readUIntBE(0, 3);
      if (this.#buf.length < 9 + length) return;
      this.frames.push({
        type: this.#buf[3]!,
        flags: this.#buf[4]!,
        stream: this.#buf.readUInt32BE(5) & 0x7fffffff,
        payload: this.#buf.subarray(9, 9 + length),
      });
      this.#buf = this.#buf.subarray(9 + length);
    }
  }

  async waitFor(what: string, match: (f: Frame) => boolean, ms = 5000): Promise<Frame> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.frames.find(match);
      if (found) return found;
      if (Date.now() > deadline)
        throw new Error(`no ${what}; got types ${this.frames.map((f) => f.type).join(',')}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** The GOAWAY's error code, once the server has sent it and closed. */
  async goaway(): Promise<number> {
    const f = await this.waitFor('GOAWAY', (x) => x.type === FrameType.GOAWAY);
    await this.ended();
    return f.payload.readUInt32BE(4);
  }

  /** The server closed the connection (within 5 s: a regression fails, it does not hang). */
  ended(ms = 5000): Promise<void> {
    return Promise.race([
      this.closed,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error('the connection stayed open')), ms).unref(),
      ),
    ]);
  }

  /** Every frame the server wrote before it answers this PING has arrived once this resolves. */
  async sync(): Promise<void> {
    const data = Buffer.from(String(Math.random()).slice(2, 10).padEnd(8, '0'));
    this.send(frame(FrameType.PING, 0, 0, data));
    await this.waitFor(
      'PING ack',
      (f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0 && f.payload.equals(data),
    );
  }
}

const request1 = (
  stream: number,
  path = '/echo',
  endStream = true,
  extra: Array<[string, string]> = [],
): Buffer =>
  frame(
    FrameType.HEADERS,
    Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0),
    stream,
    encodeHeaders([[':method', 'POST'], [':scheme', 'http'], [':path', path], ...extra]),
  );

describe('h2 server: what a peer must not do', () => {
  let server: H2Server;
  let port: number;
  before(async () => {
    server = new H2Server(echo, { maxConcurrentStreams: 4 });
    port = await server.listen(0, '127.0.0.1');
  });
  after(() => server.close(100));

  it('answers a well-formed exchange, and ends the connection on a GOAWAY', async () => {
    const c = await RawClient.open(port);
    c.send(request1(1), request1(3, '/now'));
    await c.waitFor('the answer on stream 3', (f) => f.type === FrameType.HEADERS && f.stream === 3);
    const trailers = await c.waitFor(
      'trailers',
      (f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0,
    );
    assert.equal(trailers.stream, 1);
    await c.sync();
    // The request had ended: no RST_STREAM for a stream both sides closed.
    assert.deepEqual(
      c.frames.filter((f) => f.type === FrameType.RST_STREAM),
      [],
    );
    c.send(goawayFrame(0, ErrorCode.NO_ERROR));
    await c.ended();
  });

  it('resets only the stream whose handler throws, and goes on serving the connection', async () => {
    const c = await RawClient.open(port);
    c.send(request1(1, '/throw'), request1(3));
    const reset = await c.waitFor('RST_STREAM', (f) => f.type === FrameType.RST_STREAM && f.stream === 1);
    assert.equal(reset.payload.readUInt32BE(0), ErrorCode.INTERNAL_ERROR);
    await c.waitFor('an answer on stream 3', (f) => f.type === FrameType.HEADERS && f.stream === 3);
    c.socket.destroy();
  });

  it('ends a flood of empty CONTINUATION frames', async () => {
    const c = await RawClient.open(port);
    c.send(frame(FrameType.HEADERS, 0, 1, encodeHeaders([[':method', 'POST']])));
    const empty = frame(FrameType.CONTINUATION, 0, 1);
    const burst = Buffer.concat(Array.from({ length: 1000 }, () => empty));
    // 9 bytes each: 15,000 of them pass the 128 KiB bound.
    for (let i = 0; i < 20 && !c.socket.destroyed; i++) c.send(burst);
    assert.equal(await c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it('ends a flood of streams it has to reset itself ("MadeYouReset", CVE-2025-8671)', async () => {
    const c = await RawClient.open(port);
    const frames: Buffer[] = [];
    // A WINDOW_UPDATE of 0 is a stream error: the server resets the stream, whose work had started.
    for (let id = 1; id < 2 * 1200; id += 2) frames.push(request1(id, '/hold'), windowUpdateFrame(id, 0));
    c.send(...frames);
    assert.equal(await c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it('holds an answer while the stream window is 0, and sends it when SETTINGS raises the window', async () => {
    const c = await RawClient.open(port, false);
    c.send(PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0]]));
    c.send(request1(1, '/echo', true, [['x-answer-bytes', '500']]));
    await c.waitFor('the answer headers', (f) => f.type === FrameType.HEADERS && f.stream === 1);
    await c.sync();
    assert.equal(c.frames.filter((f) => f.type === FrameType.DATA).length, 0, 'nothing past a window of 0');
    c.send(settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 65_535]]));
    await c.waitFor('trailers', (f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0);
    const body = Buffer.concat(c.frames.filter((f) => f.type === FrameType.DATA).map((f) => f.payload));
    assert.deepEqual(body.subarray(body.length - 500), pattern(500));
    c.socket.destroy();
  });

  it('counts padding against the connection window, and gives it back', async () => {
    const c = await RawClient.open(port);
    c.send(request1(1, '/hold', false));
    // 40 frames of 16 KiB that carry one byte each: the rest is padding.
    const padded = Buffer.alloc(16_384);
    padded[0] = 16_384 - 2;
    padded[1] = 0x61;
    for (let i = 0; i < 40; i++) c.send(frame(FrameType.DATA, Flag.PADDED, 1, padded));
    const update = await c.waitFor(
      'a connection WINDOW_UPDATE',
      (f) => f.type === FrameType.WINDOW_UPDATE && f.stream === 0,
    );
    assert.ok(update.payload.readUInt32BE(0) >= 512 * 1024, String(update.payload.readUInt32BE(0)));
    c.socket.destroy();
  });

  it('refuses what is not HTTP/2, and a preface not followed by SETTINGS', async () => {
    const http1 = await RawClient.open(port, false);
    http1.send(Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
    assert.equal(await http1.goaway(), ErrorCode.PROTOCOL_ERROR);
    const noSettings = await RawClient.open(port, false);
    noSettings.send(PREFACE, frame(FrameType.PING, 0, 0, Buffer.alloc(8)));
    assert.equal(await noSettings.goaway(), ErrorCode.PROTOCOL_ERROR);
  });

  it('ends the connection on frames it must not take', async () => {
    const cases: Array<[string, Buffer, number]> = [
      [
        'a frame over 16384 bytes',
        frame(FrameType.DATA, 0, 1, Buffer.alloc(16_385)),
        ErrorCode.FRAME_SIZE_ERROR,
      ],
      ['DATA on an idle stream', frame(FrameType.DATA, 0, 5, Buffer.alloc(1)), ErrorCode.PROTOCOL_ERROR],
      ['a stream id from the server side', request1(2), ErrorCode.PROTOCOL_ERROR],
      [
        'a PUSH_PROMISE',
        frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, Buffer.alloc(4)),
        ErrorCode.PROTOCOL_ERROR,
      ],
      ['a PING of 7 bytes', frame(FrameType.PING, 0, 0, Buffer.alloc(7)), ErrorCode.FRAME_SIZE_ERROR],
      [
        'an HPACK block that is not one',
        frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.from([0x80])),
        ErrorCode.COMPRESSION_ERROR,
      ],
      [
        'a connection window past 2^31 - 1',
        Buffer.concat([windowUpdateFrame(0, 2 ** 31 - 1), windowUpdateFrame(0, 2 ** 31 - 1)]),
        ErrorCode.FLOW_CONTROL_ERROR,
      ],
      [
        'a header block interrupted by another frame',
        Buffer.concat([
          frame(FrameType.HEADERS, 0, 1, encodeHeaders([[':method', 'POST']])),
          frame(FrameType.PING, 0, 0, Buffer.alloc(8)),
        ]),
        ErrorCode.PROTOCOL_ERROR,
      ],
    ];
    for (const [what, bytes, code] of cases) {
      const c = await RawClient.open(port);
      c.send(bytes);
      assert.equal(await c.goaway(), code, what);
    }
  });

  it('ends a CONTINUATION flood before it buffers it', async () => {
    const c = await RawClient.open(port);
    c.send(frame(FrameType.HEADERS, 0, 1, encodeHeaders([[':method', 'POST']])));
    const chunk = frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(16_384, 0x40));
    // 160 KiB of a header block that never ends, past 2 x the 64 KiB header list limit.
    for (let i = 0; i < 10 && !c.socket.destroyed; i++) c.send(chunk);
    assert.equal(await c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it('answers 431 to a header list over the limit, and goes on serving the connection', async () => {
    const c = await RawClient.open(port);
    const big = encodeHeaders([
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', '/echo'],
      ['x-big', 'x'.repeat(40_000)],
      ['x-big2', 'y'.repeat(30_000)],
    ]);
    c.send(
      frame(FrameType.HEADERS, Flag.END_STREAM, 1, big.subarray(0, 16_384)),
      frame(FrameType.CONTINUATION, 0, 1, big.subarray(16_384, 32_768)),
      frame(FrameType.CONTINUATION, 0, 1, big.subarray(32_768, 49_152)),
      frame(FrameType.CONTINUATION, 0, 1, big.subarray(49_152, 65_536)),
      frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, big.subarray(65_536)),
    );
    const refused = await c.waitFor('431', (f) => f.type === FrameType.HEADERS && f.stream === 1);
    const fields: string[] = [];
    // The server's own blocks index nothing: a fresh decoder reads each.
    new HpackDecoder().decode(refused.payload, fields);
    assert.deepEqual(fields, [':status', '431']);
    c.send(request1(3));
    await c.waitFor('an answer on stream 3', (f) => f.type === FrameType.HEADERS && f.stream === 3);
    c.socket.destroy();
  });

  it('refuses streams past its limit with REFUSED_STREAM, and takes new ones once they end', async () => {
    const c = await RawClient.open(port);
    for (const id of [1, 3, 5, 7]) c.send(request1(id, '/hold'));
    c.send(request1(9, '/hold'));
    const refused = await c.waitFor('RST_STREAM', (f) => f.type === FrameType.RST_STREAM && f.stream === 9);
    assert.equal(refused.payload.readUInt32BE(0), ErrorCode.REFUSED_STREAM);
    c.send(rstStreamFrame(1, ErrorCode.CANCEL), request1(11));
    await c.waitFor('an answer on stream 11', (f) => f.type === FrameType.HEADERS && f.stream === 11);
    c.socket.destroy();
  });

  it('ends a rapid-reset flood (CVE-2023-44487) with ENHANCE_YOUR_CALM', async () => {
    const c = await RawClient.open(port);
    const frames: Buffer[] = [];
    for (let id = 1; id < 2 * 1200; id += 2)
      frames.push(request1(id, '/hold'), rstStreamFrame(id, ErrorCode.CANCEL));
    c.send(...frames);
    assert.equal(await c.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
  });

  it("sends an answer within the client's windows, the rest as WINDOW_UPDATEs come, trailers last", async () => {
    const c = await RawClient.open(port, false);
    c.send(PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 100]]));
    c.send(request1(1, '/echo', true, [['x-answer-bytes', '1000']]));
    await c.waitFor('the first DATA', (f) => f.type === FrameType.DATA);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const data = (): Frame[] => c.frames.filter((f) => f.type === FrameType.DATA);
    const sent = (): number => data().reduce((n, f) => n + f.payload.length, 0);
    assert.equal(sent(), 100, 'no more than the stream window');
    let total = 0;
    const ended = (): boolean =>
      c.frames.some((f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0);
    while (!ended()) {
      total = sent();
      c.send(windowUpdateFrame(1, 300));
      await c.waitFor('more DATA', () => sent() > total || ended());
    }
    const body = Buffer.concat(data().map((f) => f.payload));
    const infoBytes = body.length - 1000;
    assert.ok(infoBytes > 0);
    assert.deepEqual(body.subarray(infoBytes), pattern(1000));
    const last = c.frames.at(-1)!;
    assert.equal(last.type, FrameType.HEADERS, 'trailers after the last DATA');
    for (const f of data()) assert.ok(f.payload.length <= 300);
    c.socket.destroy();
  });

  it('acks SETTINGS and PINGs, ignores PRIORITY and unknown frames, and reads padded frames', async () => {
    const c = await RawClient.open(port);
    const padded = Buffer.concat([Buffer.from([3]), Buffer.from('abc'), Buffer.alloc(3)]);
    c.send(
      frame(FrameType.PING, 0, 0, Buffer.from('pingpong')),
      frame(FrameType.PRIORITY, 0, 1, Buffer.alloc(5)),
      frame(0x42, 0, 0, Buffer.from('unknown')),
      frame(
        FrameType.HEADERS,
        Flag.END_HEADERS,
        1,
        encodeHeaders([
          [':method', 'POST'],
          [':path', '/echo'],
        ]),
      ),
      frame(FrameType.DATA, Flag.PADDED | Flag.END_STREAM, 1, padded),
    );
    await c.waitFor('SETTINGS ack', (f) => f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) !== 0);
    const pong = await c.waitFor('PING ack', (f) => f.type === FrameType.PING && (f.flags & Flag.ACK) !== 0);
    assert.equal(pong.payload.toString(), 'pingpong');
    await c.waitFor('the answer', (f) => f.type === FrameType.DATA && f.stream === 1);
    const body = Buffer.concat(c.frames.filter((f) => f.type === FrameType.DATA).map((f) => f.payload));
    assert.equal(
      (JSON.parse(body.toString()) as { length: number }).length,
      3,
      'the padding is not the body',
    );
    c.socket.destroy();
  });
});
