// HPACK's Huffman code (RFC 7541, Appendix B). The code is canonical: codes
// of one length are consecutive numbers in symbol order, and each length
// starts where the shorter ones left off. So the length of each symbol's code
// is all the table needs; the codes follow from it, and a decoder reading one
// bit at a time knows at each length whether it holds a whole code.

/** The length in bits of the code for each symbol 0-255, then EOS (256). */
const LENGTHS = [
  // 0-31: control bytes
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28,
  // 32-63: ' ' to '?'
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  // 64-95: '@' to '_'
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  // 96-127: '`' to DEL
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  // 128-255
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22,
  23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22,
  23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
  21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25,
  24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  // EOS
  30,
];

export const EOS = 256;
const MAX_BITS = 30;

/** Symbols ordered by (code length, symbol): the canonical order. */
const SYMBOLS = new Uint16Array(257);
/** Per code length: how many codes, the first code's value, and its place in SYMBOLS. */
const COUNT = new Int32Array(MAX_BITS + 1);
const FIRST_CODE = new Int32Array(MAX_BITS + 1);
const FIRST_INDEX = new Int32Array(MAX_BITS + 1);
/** Each symbol's code, aligned to the least significant bit (the RFC's hex column). */
export const CODES = new Uint32Array(257);

{
  if (LENGTHS.length !== 257) throw new Error(`HPACK Huffman table holds ${LENGTHS.length} lengths`);
  for (const length of LENGTHS) COUNT[length]!++;
  let code = 0;
  let index = 0;
  for (let length = 1; length <= MAX_BITS; length++) {
    FIRST_CODE[length] = code;
    FIRST_INDEX[length] = index;
    index += COUNT[length]!;
    code = (code + COUNT[length]!) * 2;
  }
  const next = Int32Array.from(FIRST_INDEX);
  for (let symbol = 0; symbol < 257; symbol++) {
    const length = LENGTHS[symbol]!;
    const at = next[length]!++;
    SYMBOLS[at] = symbol;
    CODES[symbol] = FIRST_CODE[length]! + at - FIRST_INDEX[length]!;
  }
}

export const codeLength = (symbol: number): number => LENGTHS[symbol]!;

/**
 * Decodes `buf[start, end)` to a latin1 string; undefined when it is not a
 * valid HPACK Huffman string (EOS inside it, or padding longer than 7 bits
 * or not all ones: RFC 7541, 5.2).
 */
export function huffmanDecode(buf: Buffer, start: number, end: number): string | undefined {
  const out = Buffer.allocUnsafe(Math.ceil(((end - start) * 8) / 5));
  let n = 0;
  let code = 0;
  let length = 0;
  for (let i = start; i < end; i++) {
    const byte = buf[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      code = (code << 1) | ((byte >> bit) & 1);
      length++;
      // Canonical: a prefix that is not yet a code is above every code of its length.
      if (code - FIRST_CODE[length]! < COUNT[length]!) {
        const symbol = SYMBOLS[FIRST_INDEX[length]! + code - FIRST_CODE[length]!]!;
        if (symbol === EOS) return undefined;
        out[n++] = symbol;
        code = 0;
        length = 0;
      } else if (length === MAX_BITS) {
        return undefined;
      }
    }
  }
  if (length > 7 || code !== (1 << length) - 1) return undefined;
  return out.toString('latin1', 0, n);
}

/** Huffman-encodes a latin1 string (the tests use it to write what clients send). */
export function huffmanEncode(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  let bits = 0;
  for (const b of bytes) bits += LENGTHS[b]!;
  const out = Buffer.alloc(Math.ceil(bits / 8));
  let pos = 0;
  for (const b of bytes) {
    const code = CODES[b]!;
    for (let k = LENGTHS[b]! - 1; k >= 0; k--, pos++) {
      if ((code >>> k) & 1) out[pos >> 3]! |= 0x80 >> (pos & 7);
    }
  }
  // The padding is the most significant bits of EOS: all ones.
  for (; pos & 7; pos++) out[pos >> 3]! |= 0x80 >> (pos & 7);
  return out;
}
