// HPACK (RFC 7541) as a server needs it: a decoder for the header blocks
// clients send, dynamic table included, and an encoder for the few fixed
// answers a server writes, which are encoded once and never indexed (so the
// encoder keeps no table and a peer's HEADER_TABLE_SIZE cannot matter).
import { huffmanDecode } from './huffman.ts';

/** The static table (RFC 7541, Appendix A); index 1 is STATIC[0]. */
const STATIC: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];

/** Each entry's size in the dynamic table: its octets plus 32 (RFC 7541, 4.1). */
const ENTRY_OVERHEAD = 32;
/** The table size a decoder starts with and this server never changes (SETTINGS_HEADER_TABLE_SIZE). */
export const DEFAULT_TABLE_SIZE = 4096;

/** Huffman strings remembered per connection, and the longest remembered. */
const RECENT_STRINGS = 4;
const RECENT_MAX_BYTES = 256;

/** A header block that is not valid HPACK: a connection error (COMPRESSION_ERROR). */
export class HpackError extends Error {
  override readonly name = 'HpackError';
}

/** A decoded header list: names and values alternating, in the order sent. */
export type HeaderList = string[];

/**
 * Decodes one connection's header blocks, in order: each block may add to the
 * table the next ones refer to, so every block is decoded, even one whose
 * stream is refused.
 */
export class HpackDecoder {
  /** The dynamic table, oldest first: dynamic index 1 is the last entry. */
  readonly #names: string[] = [];
  readonly #values: string[] = [];
  #size = 0;
  #maxSize: number;
  readonly #limit: number;
  #pos = 0;
  #buf: Buffer = Buffer.alloc(0);
  /**
   * The last Huffman strings decoded, by their bytes. Clients send some
   * values as literals that are never indexed, the same on every request
   * (nghttp2 does so for `:path`): comparing bytes is cheaper than decoding.
   */
  readonly #recent: Array<{ bytes: Buffer; text: string }> = [];
  #next = 0;

  constructor(limit = DEFAULT_TABLE_SIZE) {
    this.#limit = limit;
    this.#maxSize = limit;
  }

  /**
   * Decodes `block` into `out` and returns the header list's size as
   * SETTINGS_MAX_HEADER_LIST_SIZE counts it (names, values, 32 per field).
   * Throws HpackError on a malformed block.
   */
  decode(block: Buffer, out: HeaderList): number {
    this.#buf = block;
    this.#pos = 0;
    let listSize = 0;
    let first = true;
    while (this.#pos < block.length) {
      const byte = block[this.#pos]!;
      if (byte & 0x80) {
        // Indexed field.
        const index = this.#int(7);
        if (index === 0) throw new HpackError('index 0');
        listSize += this.#push(out, this.#name(index), this.#value(index));
      } else if (byte & 0x40) {
        // Literal with incremental indexing.
        const index = this.#int(6);
        const name = index === 0 ? this.#string() : this.#name(index);
        const value = this.#string();
        this.#add(name, value);
        listSize += this.#push(out, name, value);
      } else if (byte & 0x20) {
        // Dynamic table size update: only before the first field.
        if (!first) throw new HpackError('table size update after a field');
        const size = this.#int(5);
        if (size > this.#limit) throw new HpackError(`table size ${size} above ${this.#limit}`);
        this.#maxSize = size;
        this.#evict(0);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = this.#int(4);
        const name = index === 0 ? this.#string() : this.#name(index);
        listSize += this.#push(out, name, this.#string());
      }
      first = false;
    }
    return listSize;
  }

  #push(out: HeaderList, name: string, value: string): number {
    out.push(name, value);
    return name.length + value.length + ENTRY_OVERHEAD;
  }

  #name(index: number): string {
    if (index <= STATIC.length) return STATIC[index - 1]![0];
    const at = this.#names.length - (index - STATIC.length);
    if (at < 0) throw new HpackError(`index ${index} past the table`);
    return this.#names[at]!;
  }

  #value(index: number): string {
    if (index <= STATIC.length) return STATIC[index - 1]![1];
    return this.#values[this.#names.length - (index - STATIC.length)]!;
  }

  #add(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    // An entry larger than the table empties it and is not added (RFC 7541, 4.4).
    this.#evict(size);
    if (size > this.#maxSize) return;
    this.#names.push(name);
    this.#values.push(value);
    this.#size += size;
  }

  /** Drops the oldest entries until `room` more octets fit. */
  #evict(room: number): void {
    let drop = 0;
    while (this.#size + room > this.#maxSize && drop < this.#names.length) {
      this.#size -= this.#names[drop]!.length + this.#values[drop]!.length + ENTRY_OVERHEAD;
      drop++;
    }
    if (drop > 0) {
      this.#names.splice(0, drop);
      this.#values.splice(0, drop);
    }
  }

  /** An integer with an N-bit prefix (RFC 7541, 5.1), at most 2^28 - 1 + prefix: anything larger is an attack. */
  #int(prefixBits: number): number {
    const buf = this.#buf;
    const max = (1 << prefixBits) - 1;
    let value = buf[this.#pos++]! & max;
    if (value < max) return value;
    for (let shift = 0; shift <= 21; shift += 7) {
      if (this.#pos >= buf.length) throw new HpackError('truncated integer');
      const byte = buf[this.#pos++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value;
    }
    throw new HpackError('integer too long');
  }

  /** A string literal (RFC 7541, 5.2), as latin1. */
  #string(): string {
    const buf = this.#buf;
    if (this.#pos >= buf.length) throw new HpackError('truncated string');
    const huffman = (buf[this.#pos]! & 0x80) !== 0;
    const length = this.#int(7);
    const start = this.#pos;
    const end = start + length;
    if (end > buf.length) throw new HpackError('string past the block');
    this.#pos = end;
    if (!huffman) return buf.toString('latin1', start, end);
    for (const seen of this.#recent) {
      if (seen.bytes.length === length && buf.compare(seen.bytes, 0, length, start, end) === 0)
        return seen.text;
    }
    const text = huffmanDecode(buf, start, end);
    if (text === undefined) throw new HpackError('invalid Huffman string');
    if (length <= RECENT_MAX_BYTES) {
      this.#recent[this.#next] = { bytes: Buffer.from(buf.subarray(start, end)), text };
      this.#next = (this.#next + 1) % RECENT_STRINGS;
    }
    return text;
  }
}

function writeInt(out: number[], prefix: number, prefixBits: number, value: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(prefix | value);
    return;
  }
  out.push(prefix | max);
  let rest = value - max;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  out.push(rest);
}

/**
 * Encodes a header list once: a field the static table holds whole is one
 * byte, a name it holds is referred to, everything else is a literal; never
 * indexed, never Huffman (these blocks are written as they are, many times).
 */
export function encodeHeaders(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const whole = STATIC.findIndex(([n, v]) => n === name && v === value);
    if (whole >= 0) {
      writeInt(out, 0x80, 7, whole + 1);
      continue;
    }
    const named = STATIC.findIndex(([n]) => n === name);
    writeInt(out, 0x00, 4, named + 1);
    if (named < 0) {
      writeInt(out, 0x00, 7, Buffer.byteLength(name, 'latin1'));
      out.push(...Buffer.from(name, 'latin1'));
    }
    writeInt(out, 0x00, 7, Buffer.byteLength(value, 'latin1'));
    out.push(...Buffer.from(value, 'latin1'));
  }
  return Buffer.from(out);
}
