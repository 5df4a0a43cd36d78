// HPACK: the RFC's own examples, the Huffman code against the RFC's table,
// malformed blocks, and random bytes. What real encoders (nghttp2 through
// node:http2, Envoy's, h2load's) send is checked end to end in
// test/integration/h2-server.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeHeaders, HpackDecoder, HpackError } from '../../src/http/h2/hpack.ts';
import type { HeaderList } from '../../src/http/h2/hpack.ts';
import { CODES, codeLength, huffmanDecode, huffmanEncode } from '../../src/http/h2/huffman.ts';

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

function decode(decoder: HpackDecoder, block: Buffer): string[][] {
  const out: HeaderList = [];
  decoder.decode(block, out);
  const pairs: string[][] = [];
  for (let i = 0; i < out.length; i += 2) pairs.push([out[i]!, out[i + 1]!]);
  return pairs;
}

/** RFC 7541, C.3 (plain) and C.4 (Huffman): three requests on one connection, the table carried over. */
const REQUESTS = [
  [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ],
  [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ],
  [
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/index.html'],
    [':authority', 'www.example.com'],
    ['custom-key', 'custom-value'],
  ],
];

describe('HPACK', () => {
  it("decodes RFC 7541 C.3's requests, the dynamic table carried from one to the next", () => {
    const decoder = new HpackDecoder();
    const blocks = [
      '828684410f7777772e6578616d706c652e636f6d',
      '828684be58086e6f2d6361636865',
      '828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565',
    ];
    blocks.forEach((block, i) => assert.deepEqual(decode(decoder, hex(block)), REQUESTS[i]));
  });

  it("decodes RFC 7541 C.4's requests, Huffman-coded", () => {
    const decoder = new HpackDecoder();
    const blocks = [
      '828684418cf1e3c2e5f23a6ba0ab90f4ff',
      '828684be5886a8eb10649cbf',
      '828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf',
    ];
    blocks.forEach((block, i) => assert.deepEqual(decode(decoder, hex(block)), REQUESTS[i]));
  });

  it('evicts the oldest entries past the table size, and follows a size update', () => {
    const decoder = new HpackDecoder();
    // Literal with incremental indexing, new name (0x40): names and values under 127 bytes.
    const literal = (name: string, value: string): Buffer =>
      Buffer.concat([
        Buffer.from([0x40, name.length]),
        Buffer.from(name),
        Buffer.from([value.length]),
        Buffer.from(value),
      ]);
    // Each entry is 3 + 100 + 32 = 135 octets: 30 fit in 4096, so of k10..k49 the last 30 stay.
    for (let i = 10; i < 50; i++) decode(decoder, literal(`k${i}`, String(i).repeat(50)));
    // Dynamic index 1 (62) is the newest, 30 (91) the oldest kept.
    assert.deepEqual(decode(decoder, Buffer.from([0x80 | 62])), [['k49', '49'.repeat(50)]]);
    assert.deepEqual(decode(decoder, Buffer.from([0x80 | 91])), [['k20', '20'.repeat(50)]]);
    assert.throws(() => decode(decoder, Buffer.from([0x80 | 92])), HpackError, 'k19 was evicted');
    // A size update to 150 (31 + 119) keeps only the newest entry.
    assert.deepEqual(decode(decoder, Buffer.from([0x3f, 119, 0x80 | 62])), [['k49', '49'.repeat(50)]]);
    assert.throws(() => decode(decoder, Buffer.from([0x80 | 63])), HpackError);
    // An entry larger than the table (3 + 120 + 32) empties it and is not added.
    assert.deepEqual(decode(decoder, literal('big', 'x'.repeat(120))), [['big', 'x'.repeat(120)]]);
    assert.throws(() => decode(decoder, Buffer.from([0x80 | 62])), HpackError);
  });

  it('decodes Huffman literals sent again and again (never indexed, as nghttp2 sends :path) to the right value', () => {
    const decoder = new HpackDecoder();
    // Literal without indexing, name :path (4), a Huffman value.
    const path = (value: string): Buffer => {
      const coded = huffmanEncode(value);
      return Buffer.concat([Buffer.from([0x04, 0x80 | coded.length]), coded]);
    };
    // Same lengths, different bytes; more of them than the decoder remembers; then each again.
    const paths = ['/a/b/c/d1', '/a/b/c/d2', '/a/b/c/d3', '/a/b/c/d4', '/a/b/c/d5', '/a/b/c/d6'];
    for (let round = 0; round < 3; round++) {
      for (const p of [...paths, ...paths.slice().reverse()])
        assert.deepEqual(decode(decoder, path(p)), [[':path', p]]);
    }
  });

  it('refuses malformed blocks with HpackError, and nothing else', () => {
    const bad: Array<[string, Buffer]> = [
      ['index 0', Buffer.from([0x80])],
      ['an index past both tables', Buffer.from([0x80 | 70])],
      ['a truncated integer', Buffer.from([0xff, 0x80])],
      ['an integer over 2^28', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])],
      ['a string past the block', Buffer.from([0x04, 0x05, 0x61])],
      ['a name with no value', Buffer.from([0x00, 0x01, 0x61])],
      ['a size update past the limit (4097)', Buffer.from([0x3f, 0xe2, 0x1f])],
      ['a size update after a field', Buffer.from([0x82, 0x20])],
      ['Huffman padding of zeros', Buffer.from([0x04, 0x81, 0x00])],
      ['Huffman padding over 7 bits', Buffer.from([0x04, 0x82, 0x1f, 0xff])],
      ['EOS inside a Huffman string', Buffer.from([0x04, 0x84, 0xff, 0xff, 0xff, 0xff])],
    ];
    for (const [what, block] of bad) assert.throws(() => decode(new HpackDecoder(), block), HpackError, what);
  });

  it('survives random blocks: a list or HpackError, never another error or a hang', () => {
    let seed = 2026;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
    const decoder = new HpackDecoder();
    let refused = 0;
    for (let i = 0; i < 20_000; i++) {
      const block = Buffer.alloc(1 + Math.floor(rand() * 40));
      for (let j = 0; j < block.length; j++) block[j] = Math.floor(rand() * 256);
      try {
        decode(decoder, block);
      } catch (err) {
        assert.ok(err instanceof HpackError, String(err));
        refused++;
      }
    }
    assert.ok(refused > 0 && refused < 20_000);
  });

  it('encodes answers the decoder reads back: whole static entries, static names, literals', () => {
    const fields: Array<[string, string]> = [
      [':status', '200'],
      ['content-type', 'application/grpc'],
      ['grpc-status', '16'],
      ['grpc-message', 'x'.repeat(300)],
    ];
    const block = encodeHeaders(fields);
    assert.equal(block[0], 0x88, ':status 200 is static entry 8');
    assert.deepEqual(decode(new HpackDecoder(), block), fields);
  });
});

describe('HPACK Huffman code', () => {
  it("matches RFC 7541 Appendix B's codes", () => {
    const table: Array<[number, number, number]> = [
      [0, 0x1ff8, 13],
      [1, 0x7fffd8, 23],
      [10, 0x3ffffffc, 30],
      [32, 0x14, 6],
      [48, 0x0, 5],
      [97, 0x3, 5],
      [122, 0x7b, 7],
      [126, 0x1ffd, 13],
      [127, 0xffffffc, 28],
      [153, 0x1fffdc, 21],
      [203, 0x7ffffde, 27],
      [255, 0x3ffffee, 26],
      [256, 0x3fffffff, 30],
    ];
    for (const [symbol, code, length] of table) {
      assert.equal(CODES[symbol], code, `symbol ${symbol}`);
      assert.equal(codeLength(symbol), length, `symbol ${symbol}`);
    }
  });

  it('decodes what it encodes, every byte value, and refuses every truncation that breaks the padding', () => {
    let all = '';
    for (let i = 0; i < 256; i++) all += String.fromCharCode(i);
    const coded = huffmanEncode(all);
    assert.equal(huffmanDecode(coded, 0, coded.length), all);
    for (let cut = 1; cut < coded.length; cut++) {
      const text = huffmanDecode(coded, 0, cut);
      if (text !== undefined) assert.ok(all.startsWith(text), `cut at ${cut}`);
    }
  });
});
