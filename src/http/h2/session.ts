// One HTTP/2 connection, server side, for request/answer exchanges such as
// unary gRPC: frames in, streams to the handler, answers out. Written for
// the few things such a server does, on node:net: node:http2 builds a
// stream object, a headers object and several events per request, and that
// machinery cost more than the check it carries (docs/operations.md, the
// authz figures).
//
// What it takes care of: the preface and SETTINGS, HPACK with CONTINUATION,
// padding, flow control both ways, PING, RST_STREAM, GOAWAY both ways,
// stream limits, and bounds on everything a peer can make it hold.
import type { Socket } from 'node:net';
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  ErrorCode,
  Flag,
  FRAME_HEADER_BYTES,
  FrameType,
  goawayFrame,
  frame,
  MAX_ALLOWED_FRAME_SIZE,
  MAX_WINDOW,
  PREFACE,
  rstStreamFrame,
  Setting,
  settingsFrame,
  windowUpdateFrame,
  writeFrameHeader,
} from './frames.ts';
import { DEFAULT_TABLE_SIZE, encodeHeaders, HpackDecoder, HpackError } from './hpack.ts';
import type { HeaderList } from './hpack.ts';

/** What a server allows each connection. */
export interface H2Limits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: a stream past it is refused (REFUSED_STREAM; clients retry). */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE: a larger request header list is answered 431. */
  readonly maxHeaderListSize: number;
}

export const DEFAULT_LIMITS: H2Limits = { maxConcurrentStreams: 256, maxHeaderListSize: 64 * 1024 };

/** The connection's receive window: requests are read as they come, so it only needs to cover a round trip. */
const CONNECTION_WINDOW = 1024 * 1024;
/** A header block larger than this (compressed, across CONTINUATIONs) ends the connection. */
const MAX_HEADER_BLOCK_FACTOR = 2;
/**
 * Streams reset, by the client or by this side for its errors, past half of
 * a window of streams: an attack that has the server start work and drop it
 * (CVE-2023-44487 "rapid reset", CVE-2025-8671 "MadeYouReset").
 */
const RESET_WINDOW = 1000;
const RESET_LIMIT = RESET_WINDOW / 2;
/** How long a connection ended after a protocol error may take to go. */
const END_GRACE_MS = 1000;

const STATUS_431 = encodeHeaders([[':status', '431']]);
const SETTINGS_ACK = frame(FrameType.SETTINGS, Flag.ACK, 0);
/** HPACK: the dynamic table's size is now 0 (001 00000). */
const TABLE_SIZE_ZERO = Buffer.from([0x20]);

/** A request stream as the handler sees it. */
export interface ServerStream {
  readonly id: number;
  /** The request headers as sent: names and values alternating. */
  readonly fields: HeaderList;
  /** The first value of a request header (names are lower case, pseudo-headers start with ':'). */
  header(name: string): string | undefined;
  /** Each piece of the request body, in order. */
  ondata: ((chunk: Buffer) => void) | undefined;
  /** The request is complete. */
  onend: (() => void) | undefined;
  /** The stream ended before it was answered: reset by the client, or the connection is gone. */
  onabort: (() => void) | undefined;
  /** Answered or aborted: nothing more will be sent on it. */
  readonly closed: boolean;
  /**
   * Answers and ends the stream: `head` (an HPACK block from encodeHeaders),
   * then `data`, then `trailers`; `head` alone is a headers-only answer. What
   * the client has not sent yet is then refused (RST_STREAM NO_ERROR).
   */
  respond(head: Buffer, data?: Buffer, trailers?: Buffer): void;
}

class Stream implements ServerStream {
  ondata: ((chunk: Buffer) => void) | undefined = undefined;
  onend: (() => void) | undefined = undefined;
  onabort: (() => void) | undefined = undefined;
  answered = false;
  aborted = false;
  remoteEnded = false;
  recvWindow = DEFAULT_WINDOW;
  /** What flow control still holds back of the answer. */
  pendingData: Buffer | undefined = undefined;
  pendingTrailers: Buffer | undefined = undefined;

  constructor(
    readonly session: H2Session,
    readonly id: number,
    readonly fields: HeaderList,
    public sendWindow: number,
  ) {}

  get closed(): boolean {
    return this.answered || this.aborted;
  }

  header(name: string): string | undefined {
    const f = this.fields;
    for (let i = 0; i < f.length; i += 2) if (f[i] === name) return f[i + 1];
    return undefined;
  }

  respond(head: Buffer, data?: Buffer, trailers?: Buffer): void {
    this.session.respond(this, head, data, trailers);
  }
}

/** A connection error (RFC 9113, 5.4.1): GOAWAY with `code`, then the connection ends. */
class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export class H2Session {
  readonly #socket: Socket;
  readonly #handler: (stream: ServerStream) => void;
  readonly #limits: H2Limits;
  readonly #onClose: (session: H2Session) => void;
  readonly #decoder = new HpackDecoder();
  readonly #streams = new Map<number, Stream>();
  /** Streams whose answer waits for a WINDOW_UPDATE, oldest first. */
  readonly #blocked = new Set<Stream>();
  /** Bytes of an incomplete frame, kept for the next read. */
  #rest: Buffer | undefined;
  #prefaceSeen = false;
  #settingsSeen = false;
  /** The highest stream id the client has used: anything above it is idle. */
  #lastStream = 0;
  /** The highest stream id taken for processing: what a GOAWAY names. */
  #lastTaken = 0;
  #windowStreams = 0;
  #resets = 0;
  /** The client lowered SETTINGS_HEADER_TABLE_SIZE: the next header block must say so (RFC 7541, 4.2). */
  #tableSizeUpdate = false;
  #sendWindow = DEFAULT_WINDOW;
  #recvWindow = CONNECTION_WINDOW;
  #recvUnacked = 0;
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  /** A header block still waiting for its CONTINUATION frames. */
  #block: { stream: number; endStream: boolean; parts: Buffer[]; bytes: number } | undefined;
  /** Frames to write, sent together: at the end of each read, or in a microtask for answers given later. */
  readonly #out: Buffer[] = [];
  #reading = false;
  #flushQueued = false;
  #paused = false;
  #goawaySent = false;
  #peerGoaway = false;
  #ended = false;
  #closed = false;

  constructor(
    socket: Socket,
    handler: (stream: ServerStream) => void,
    limits: H2Limits,
    onClose: (session: H2Session) => void,
  ) {
    this.#socket = socket;
    this.#handler = handler;
    this.#limits = limits;
    this.#onClose = onClose;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#onDrain());
    socket.on('error', () => undefined); // a reset: 'close' follows
    socket.on('close', () => this.#onSocketClose());
    // The client sends no more (allowHalfOpen): what it asked is still answered, then the connection ends.
    socket.on('end', () => {
      this.#peerGoaway = true;
      this.#endIfIdle();
    });
    this.#queue(
      settingsFrame([
        [Setting.MAX_CONCURRENT_STREAMS, limits.maxConcurrentStreams],
        [Setting.MAX_HEADER_LIST_SIZE, limits.maxHeaderListSize],
      ]),
    );
    this.#queue(windowUpdateFrame(0, CONNECTION_WINDOW - DEFAULT_WINDOW));
    this.#flush();
  }

  /** Open streams: answered ones still sending count until their last byte is out. */
  get streams(): number {
    return this.#streams.size;
  }

  /** A graceful end: GOAWAY naming the last stream taken; those are answered, then the connection ends. */
  shutdown(): void {
    if (this.#goawaySent || this.#ended) return;
    this.#goawaySent = true;
    this.#queue(goawayFrame(this.#lastTaken, ErrorCode.NO_ERROR));
    this.#flush();
    this.#endIfIdle();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    if (this.#ended) return;
    const buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    this.#reading = true;
    try {
      this.#read(buf);
    } catch (err) {
      const code = err instanceof ConnectionError ? err.code : ErrorCode.INTERNAL_ERROR;
      this.#fail(code);
    } finally {
      this.#reading = false;
      this.#flush();
    }
  }

  #read(buf: Buffer): void {
    let pos = 0;
    if (!this.#prefaceSeen) {
      const n = Math.min(buf.length, PREFACE.length);
      if (buf.compare(PREFACE, 0, n, 0, n) !== 0) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'not the HTTP/2 preface');
      }
      if (n < PREFACE.length) {
        this.#rest = buf;
        return;
      }
      this.#prefaceSeen = true;
      pos = PREFACE.length;
    }
    while (buf.length - pos >= FRAME_HEADER_BYTES && !this.#ended) {
      const length = (buf[pos]! << 16) | (buf[pos + 1]! << 8) | buf[pos + 2]!;
      // This server announces no larger frames (RFC 9113, 4.2).
      if (length > DEFAULT_MAX_FRAME_SIZE) {
        throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'frame too large');
      }
      if (buf.length - pos - FRAME_HEADER_BYTES < length) break;
      const type = buf[pos + 3]!;
      const flags = buf[pos + 4]!;
      const stream = buf.readUInt32BE(pos + 5) & 0x7fffffff;
      const start = pos + FRAME_HEADER_BYTES;
      pos = start + length;
      this.#frame(type, flags, stream, buf.subarray(start, pos));
    }
    if (pos < buf.length && !this.#ended) this.#rest = buf.subarray(pos);
  }

  #frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#block && type !== FrameType.CONTINUATION) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'a header block was interrupted');
    }
    if (!this.#settingsSeen && (type !== FrameType.SETTINGS || flags & Flag.ACK)) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'the preface must end with SETTINGS');
    }
    switch (type) {
      case FrameType.DATA:
        return this.#onDataFrame(flags, id, payload);
      case FrameType.HEADERS:
        return this.#onHeaders(flags, id, payload);
      case FrameType.CONTINUATION:
        return this.#onContinuation(flags, id, payload);
      case FrameType.RST_STREAM:
        return this.#onReset(id, payload);
      case FrameType.SETTINGS:
        return this.#onSettings(flags, id, payload);
      case FrameType.PING:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'PING size');
        if (!(flags & Flag.ACK)) this.#queue(frame(FrameType.PING, Flag.ACK, 0, payload));
        return;
      case FrameType.GOAWAY:
        if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (payload.length < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'GOAWAY size');
        this.#peerGoaway = true;
        return this.#endIfIdle();
      case FrameType.WINDOW_UPDATE:
        return this.#onWindowUpdate(id, payload);
      case FrameType.PRIORITY:
        if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) this.#queue(rstStreamFrame(id, ErrorCode.FRAME_SIZE_ERROR));
        return; // priorities do not matter to answers this small
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'a client cannot push');
      default:
        return; // unknown frame types are ignored (RFC 9113, 4.1)
    }
  }

  #onHeaders(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'HEADERS on stream 0');
    let start = 0;
    let end = payload.length;
    if (flags & Flag.PADDED) {
      if (end < 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'padding');
      start = 1;
      end -= payload[0]!;
    }
    if (flags & Flag.PRIORITY) start += 5;
    if (start > end) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'padding past the frame');
    const fragment = payload.subarray(start, end);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (flags & Flag.END_HEADERS) return this.#onHeaderBlock(id, endStream, fragment);
    // Frame headers count too, or a flood of empty CONTINUATIONs would grow `parts` for free.
    const bytes = FRAME_HEADER_BYTES + fragment.length;
    this.#block = { stream: id, endStream, parts: [fragment], bytes };
    this.#checkBlockSize(bytes);
  }

  #onContinuation(flags: number, id: number, payload: Buffer): void {
    const block = this.#block;
    if (!block || block.stream !== id) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION without its HEADERS');
    }
    block.parts.push(payload);
    block.bytes += FRAME_HEADER_BYTES + payload.length;
    this.#checkBlockSize(block.bytes);
    if (flags & Flag.END_HEADERS) {
      this.#block = undefined;
      this.#onHeaderBlock(id, block.endStream, Buffer.concat(block.parts));
    }
  }

  /** A CONTINUATION flood is refused before it is buffered. */
  #checkBlockSize(bytes: number): void {
    if (bytes > this.#limits.maxHeaderListSize * MAX_HEADER_BLOCK_FACTOR) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'header block too large');
    }
  }

  #onHeaderBlock(id: number, endStream: boolean, block: Buffer): void {
    const fields: HeaderList = [];
    let listSize: number;
    try {
      listSize = this.#decoder.decode(block, fields);
    } catch (err) {
      if (err instanceof HpackError) throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, err.message);
      throw err;
    }
    const open = this.#streams.get(id);
    if (open) {
      // Trailers: they end the request, and nothing here reads them.
      if (open.remoteEnded) return this.#reset(open, ErrorCode.STREAM_CLOSED);
      if (!endStream) return this.#reset(open, ErrorCode.PROTOCOL_ERROR);
      return this.#remoteEnd(open);
    }
    if ((id & 1) === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'an even stream from a client');
    // Late trailers of a stream this side already ended.
    if (id <= this.#lastStream) return;
    this.#lastStream = id;
    if (this.#goawaySent || this.#streams.size >= this.#limits.maxConcurrentStreams) {
      return this.#queue(rstStreamFrame(id, ErrorCode.REFUSED_STREAM));
    }
    this.#lastTaken = id;
    if (++this.#windowStreams >= RESET_WINDOW) {
      this.#windowStreams = 0;
      this.#resets = 0;
    }
    if (listSize > this.#limits.maxHeaderListSize) {
      this.#queueHeaders(id, STATUS_431, true);
      if (!endStream) this.#queue(rstStreamFrame(id, ErrorCode.NO_ERROR));
      return;
    }
    const stream = new Stream(this, id, fields, this.#peerInitialWindow);
    // A request without :method or :path is malformed (RFC 9113, 8.3.1).
    if (stream.header(':method') === undefined || stream.header(':path') === undefined) {
      return this.#queue(rstStreamFrame(id, ErrorCode.PROTOCOL_ERROR));
    }
    this.#streams.set(id, stream);
    // Set first, so that an answer given at once knows the request is complete.
    stream.remoteEnded = endStream;
    try {
      this.#handler(stream);
    } catch {
      return this.#broken(stream);
    }
    if (endStream && !stream.closed) this.#call(stream, stream.onend);
  }

  /** Runs a handler's callback; a throw fails that stream (INTERNAL_ERROR), never the connection. */
  #call(stream: Stream, callback: (() => void) | undefined): void {
    if (!callback) return;
    try {
      callback();
    } catch {
      this.#broken(stream);
    }
  }

  #broken(stream: Stream): void {
    if (!stream.closed) this.#reset(stream, ErrorCode.INTERNAL_ERROR);
  }

  #onDataFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'DATA on stream 0');
    const length = payload.length;
    this.#recvWindow -= length;
    if (this.#recvWindow < 0) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'connection window');
    this.#recvUnacked += length;
    if (this.#recvUnacked >= CONNECTION_WINDOW / 2) {
      this.#queue(windowUpdateFrame(0, this.#recvUnacked));
      this.#recvWindow += this.#recvUnacked;
      this.#recvUnacked = 0;
    }
    let start = 0;
    let end = length;
    if (flags & Flag.PADDED) {
      if (length < 1 || payload[0]! >= length) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'padding');
      start = 1;
      end = length - payload[0]!;
    }
    const stream = this.#streams.get(id);
    if (!stream) {
      if (id > this.#lastStream)
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'DATA on an idle stream');
      return; // a stream this side ended: counted above, then dropped
    }
    if (stream.remoteEnded) return this.#reset(stream, ErrorCode.STREAM_CLOSED);
    stream.recvWindow -= length;
    if (stream.recvWindow < 0) return this.#reset(stream, ErrorCode.FLOW_CONTROL_ERROR);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    // Set first, so that an answer given at once knows the request is complete.
    if (endStream) stream.remoteEnded = true;
    if (end > start && !stream.closed && stream.ondata) {
      try {
        stream.ondata(payload.subarray(start, end));
      } catch {
        this.#broken(stream);
      }
    }
    if (endStream) {
      if (!stream.closed) this.#call(stream, stream.onend);
      return;
    }
    // Read as it came: the handler bounds what it keeps, so the window is given back at once.
    if (length > 0 && !stream.closed) {
      stream.recvWindow += length;
      this.#queue(windowUpdateFrame(id, length));
    }
  }

  #remoteEnd(stream: Stream): void {
    if (stream.remoteEnded) return;
    stream.remoteEnded = true;
    if (!stream.closed) this.#call(stream, stream.onend);
  }

  #onReset(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'RST_STREAM size');
    if (id === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    const stream = this.#streams.get(id);
    if (!stream) {
      if (id > this.#lastStream)
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
      return;
    }
    this.#countReset();
    this.#abort(stream);
  }

  #onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & Flag.ACK) {
      if (payload.length !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ack size');
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS size');
    for (let at = 0; at < payload.length; at += 6) {
      const value = payload.readUInt32BE(at + 2);
      switch (payload.readUInt16BE(at)) {
        case Setting.ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'ENABLE_PUSH');
          break;
        case Setting.HEADER_TABLE_SIZE:
          // This encoder indexes nothing, but a decoder below 4096 waits for it to say its table shrank.
          if (value < DEFAULT_TABLE_SIZE) this.#tableSizeUpdate = true;
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW)
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'INITIAL_WINDOW_SIZE');
          const delta = value - this.#peerInitialWindow;
          this.#peerInitialWindow = value;
          for (const stream of this.#streams.values()) {
            stream.sendWindow += delta;
            if (stream.sendWindow > MAX_WINDOW) {
              throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'stream window overflow');
            }
          }
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_ALLOWED_FRAME_SIZE) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'MAX_FRAME_SIZE');
          }
          this.#peerMaxFrame = value;
          break;
        default:
          break; // the peer's stream limit, header list size: nothing here depends on them
      }
    }
    this.#settingsSeen = true;
    this.#queue(SETTINGS_ACK);
    this.#pump();
  }

  #onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, 'WINDOW_UPDATE size');
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.#sendWindow += increment;
      if (this.#sendWindow > MAX_WINDOW)
        throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'window overflow');
    } else {
      const stream = this.#streams.get(id);
      if (!stream) {
        if (id > this.#lastStream)
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
        return;
      }
      if (increment === 0) return this.#reset(stream, ErrorCode.PROTOCOL_ERROR);
      stream.sendWindow += increment;
      if (stream.sendWindow > MAX_WINDOW) return this.#reset(stream, ErrorCode.FLOW_CONTROL_ERROR);
    }
    this.#pump();
  }

  respond(stream: Stream, head: Buffer, data?: Buffer, trailers?: Buffer): void {
    if (stream.closed || this.#ended) return;
    stream.answered = true;
    if (data === undefined && trailers === undefined) {
      this.#queueHeaders(stream.id, head, true);
      return this.#finish(stream);
    }
    const whole = data?.length ?? 0;
    if (
      whole <= stream.sendWindow &&
      whole <= this.#sendWindow &&
      whole <= this.#peerMaxFrame &&
      head.length <= this.#peerMaxFrame &&
      (trailers?.length ?? 0) <= this.#peerMaxFrame
    ) {
      // The usual answer, in one buffer: HEADERS, DATA, trailers.
      this.#queue(answerFrames(stream.id, this.#sized(head), data, trailers));
      stream.sendWindow -= whole;
      this.#sendWindow -= whole;
      return this.#finish(stream);
    }
    this.#queueHeaders(stream.id, head, false);
    stream.pendingData = data ?? Buffer.alloc(0);
    stream.pendingTrailers = trailers;
    this.#send(stream);
  }

  /** Sends what the windows allow of an answer; true when all of it is out. */
  #send(stream: Stream): boolean {
    let data = stream.pendingData!;
    const trailers = stream.pendingTrailers;
    while (data.length > 0) {
      const n = Math.min(data.length, stream.sendWindow, this.#sendWindow, this.#peerMaxFrame);
      if (n <= 0) {
        stream.pendingData = data;
        this.#blocked.add(stream);
        return false;
      }
      const last = n === data.length && trailers === undefined;
      this.#queue(frame(FrameType.DATA, last ? Flag.END_STREAM : 0, stream.id, data.subarray(0, n)));
      stream.sendWindow -= n;
      this.#sendWindow -= n;
      data = data.subarray(n);
    }
    if (trailers) this.#queueHeaders(stream.id, trailers, true);
    else if (stream.pendingData!.length === 0) this.#queue(frame(FrameType.DATA, Flag.END_STREAM, stream.id));
    stream.pendingData = undefined;
    stream.pendingTrailers = undefined;
    this.#finish(stream);
    return true;
  }

  /** Answers held back by flow control, oldest first, as far as the windows allow. */
  #pump(): void {
    for (const stream of this.#blocked) {
      if (!this.#send(stream) && this.#sendWindow <= 0) return;
    }
  }

  /** The answer is out: the stream is done, and the rest of a request still coming is refused. */
  #finish(stream: Stream): void {
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    if (!stream.remoteEnded) this.#queue(rstStreamFrame(stream.id, ErrorCode.NO_ERROR));
    this.#endIfIdle();
  }

  #reset(stream: Stream, code: number): void {
    this.#queue(rstStreamFrame(stream.id, code));
    this.#abort(stream);
    if (code !== ErrorCode.INTERNAL_ERROR) this.#countReset();
  }

  #countReset(): void {
    if (++this.#resets > RESET_LIMIT)
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'too many resets');
  }

  #abort(stream: Stream): void {
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    if (!stream.closed) {
      stream.aborted = true;
      const { onabort } = stream;
      if (onabort) {
        try {
          onabort();
        } catch {
          // the stream is gone either way
        }
      }
    }
    this.#endIfIdle();
  }

  /** HEADERS, then CONTINUATIONs when the block is larger than the peer's frames. */
  #queueHeaders(id: number, head: Buffer, endStream: boolean): void {
    const block = this.#sized(head);
    const max = this.#peerMaxFrame;
    const flags = endStream ? Flag.END_STREAM : 0;
    if (block.length <= max)
      return this.#queue(frame(FrameType.HEADERS, flags | Flag.END_HEADERS, id, block));
    this.#queue(frame(FrameType.HEADERS, flags, id, block.subarray(0, max)));
    for (let at = max; at < block.length; at += max) {
      const last = at + max >= block.length;
      this.#queue(
        frame(FrameType.CONTINUATION, last ? Flag.END_HEADERS : 0, id, block.subarray(at, at + max)),
      );
    }
  }

  /** A header block, after a table size update of 0 when one is owed: blocks go out in the order they are made. */
  #sized(block: Buffer): Buffer {
    if (!this.#tableSizeUpdate) return block;
    this.#tableSizeUpdate = false;
    return Buffer.concat([TABLE_SIZE_ZERO, block]);
  }

  #queue(buf: Buffer): void {
    this.#out.push(buf);
    if (!this.#reading && !this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushQueued = false;
    const out = this.#out;
    if (out.length === 0 || this.#closed || this.#socket.writableEnded) return;
    const buf = out.length === 1 ? out[0]! : Buffer.concat(out);
    out.length = 0;
    this.#socket.write(buf);
    // A peer that sends faster than it reads (a PING or SETTINGS flood) is not read until it catches up.
    if (this.#socket.writableNeedDrain && !this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #onDrain(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#socket.resume();
  }

  #endIfIdle(): void {
    if ((this.#goawaySent || this.#peerGoaway) && this.#streams.size === 0) this.#end();
  }

  /** Ends the connection once what is queued is written. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#flush();
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), END_GRACE_MS).unref();
  }

  #fail(code: number): void {
    if (this.#ended) return;
    this.#queue(goawayFrame(this.#lastTaken, code));
    this.#abortAll();
    this.#end();
  }

  #abortAll(): void {
    for (const stream of [...this.#streams.values()]) this.#abort(stream);
  }

  #onSocketClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#abortAll();
    this.#onClose(this);
  }
}

/** HEADERS, DATA and trailing HEADERS of one stream, written into one buffer. */
function answerFrames(
  id: number,
  head: Buffer,
  data: Buffer | undefined,
  trailers: Buffer | undefined,
): Buffer {
  const h = FRAME_HEADER_BYTES;
  const size = h + head.length + (data ? h + data.length : 0) + (trailers ? h + trailers.length : 0);
  const buf = Buffer.allocUnsafe(size);
  let at = writeFrameHeader(buf, 0, head.length, FrameType.HEADERS, Flag.END_HEADERS, id);
  at += head.copy(buf, at);
  if (data) {
    at = writeFrameHeader(buf, at, data.length, FrameType.DATA, trailers ? 0 : Flag.END_STREAM, id);
    at += data.copy(buf, at);
  }
  if (trailers) {
    at = writeFrameHeader(
      buf,
      at,
      trailers.length,
      FrameType.HEADERS,
      Flag.END_HEADERS | Flag.END_STREAM,
      id,
    );
    trailers.copy(buf, at);
  }
  return buf;
}
