import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createIssuer } from '../../src/auth/jwt/issuer.ts';
import type { TokenVerifier, VerifyResult } from '../../src/auth/jwt/verifier.ts';
import { createVerifier, extractBearer, VERIFY_REASONS } from '../../src/auth/jwt/verifier.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { b64, keyPair, signAsym, signHs256 } from '../support/jwt-sign.ts';

// Fixed by default so a failure reproduces; JWT_FUZZ_SEED explores other sequences.
const SEED = Number(process.env.JWT_FUZZ_SEED ?? 0x5eed_2026);
const SECRET = 'fuzz-secret-that-is-long-enough-0123456789';
const ISS = 'cachecast';
const AUD = 'cachecast';
const REASONS = new Set<string>(VERIFY_REASONS);
const REQUIRED = ['sub', 'jti', 'exp', 'iat', 'iss', 'aud'] as const;

/** mulberry32: small, fast, and the same sequence on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
// Base64url characters dominate, so that many strings get past the first checks.
const POOL = [
  ...B64URL,
  ...B64URL,
  ...'..==+/ \t\r\n\0"{}[]:,\\',
  'é',
  'ß',
  '😀',
  '\u202e',
  '\ufeff',
  '\ud800',
  '\udfff',
  '\u2028',
  'е', // Cyrillic
];

function randomString(g: Gen, maxLength: number): string {
  let s = '';
  const length = g.int(maxLength + 1);
  for (let i = 0; i < length; i++) s += g.pick(POOL);
  return s;
}

const hs256Raw = (headerJson: string, payloadJson: string): string =>
  signHs256(headerJson, payloadJson, SECRET);

/** JSON text of an awkward value: huge numbers, deep nesting, unicode, __proto__ keys. */
function weirdJson(g: Gen, depth = 0): string {
  const kind = g.int(depth > 3 ? 6 : 10);
  switch (kind) {
    case 0:
      return g.pick([
        '0',
        '-0',
        '1e308',
        '-1e308',
        '1e999',
        '-1e999',
        '9007199254740993',
        '1.5',
        '-1',
        '4e-400',
      ]);
    case 1:
      return g.pick(['null', 'true', 'false']);
    case 2:
      return JSON.stringify(
        g.pick(['', ' ', 'x'.repeat(300), '__proto__', 'constructor', 'a\u0000b', 'é😀', '\u202e']),
      );
    case 3:
      return JSON.stringify(randomString(g, 20));
    case 4:
      return `"${'\\u0000'.repeat(g.int(5))}"`;
    case 5: {
      const n = 1 + g.int(2000);
      return '['.repeat(n) + ']'.repeat(n);
    }
    case 6:
      return `[${Array.from({ length: g.int(4) }, () => weirdJson(g, depth + 1)).join(',')}]`;
    case 7:
      return `{"__proto__":${weirdJson(g, depth + 1)}}`;
    case 8:
      return `{"constructor":{"prototype":${weirdJson(g, depth + 1)}}}`;
    default:
      return `{${JSON.stringify(randomString(g, 8))}:${weirdJson(g, depth + 1)}}`;
  }
}

/** A value that certainly makes the claim `name` invalid for this verifier at `nowS`. */
function badClaimValue(g: Gen, name: (typeof REQUIRED)[number] | 'nbf', nowS: number): string {
  const notNumber = () => g.pick(['"1"', 'null', 'true', '[]', '{}', '"exp"', '[1]', '1e999', '-1e999']);
  switch (name) {
    case 'sub':
    case 'jti':
      return g.pick([
        '""',
        JSON.stringify('x'.repeat(257 + g.int(100))),
        '"a b"',
        '"a\\r\\nx: y"',
        '"é"',
        '"\\u0000"',
        '"😀"',
        '123',
        'null',
        '["a"]',
        '{"__proto__":"a"}',
      ]);
    case 'exp':
      return g.chance(0.5) ? notNumber() : String(g.pick([nowS - 30, nowS - 31, 0, -1e308, -1]));
    case 'iat':
      return g.chance(0.5) ? notNumber() : String(g.pick([nowS + 31, nowS + 1e6, 1e308]));
    case 'nbf':
      return g.chance(0.5) ? notNumber() : String(g.pick([nowS + 31, 1e308]));
    case 'iss':
    case 'aud': {
      const value = weirdJson(g);
      return value.includes(`"${ISS}"`) ? '"other"' : value;
    }
  }
}

interface Harness {
  verifier: TokenVerifier;
  valid: ReadonlySet<string>;
  reasons: Map<string, number>;
  calls: number;
}

function check(h: Harness, token: string, expectOk: boolean | 'any', what: string): VerifyResult {
  let result: VerifyResult;
  try {
    result = h.verifier.verify(token);
  } catch (err) {
    assert.fail(
      `verify threw (${what}, seed ${SEED}) on ${JSON.stringify(token.slice(0, 300))}: ${String(err)}`,
    );
  }
  h.calls++;
  assert.equal(typeof result.ok, 'boolean');
  if (result.ok) {
    if (expectOk === false) {
      assert.fail(`accepted a mutated token (${what}, seed ${SEED}): ${JSON.stringify(token.slice(0, 300))}`);
    }
    // Whatever got through satisfies the rules.
    const c = result.claims;
    assert.ok(typeof c.sub === 'string' && c.sub.length > 0 && c.sub.length <= 256);
    assert.ok(typeof c.jti === 'string' && c.jti.length > 0 && c.jti.length <= 256);
    assert.ok(Number.isFinite(c.exp) && Number.isFinite(c.iat));
    assert.equal(c.iss, ISS);
    assert.ok(c.aud === AUD || (Array.isArray(c.aud) && c.aud.includes(AUD)));
    assert.ok(Object.isFrozen(c));
  } else {
    if (expectOk === true) assert.fail(`refused (${result.reason}) a valid token (${what}, seed ${SEED})`);
    assert.ok(REASONS.has(result.reason), result.reason);
    assert.equal(result.error, result.reason === 'expired' ? 'token_expired' : 'invalid_token');
    h.reasons.set(result.reason, (h.reasons.get(result.reason) ?? 0) + 1);
  }
  return result;
}

/** Unsigned changes to a valid token: every one must be refused. */
function mutate(g: Gen, token: string, others: readonly string[]): string {
  const segments = token.split('.');
  switch (g.int(10)) {
    case 0:
      return randomString(g, 400);
    case 1: {
      // Replace one to three characters.
      const chars = [...token];
      for (let n = 1 + g.int(3); n > 0; n--) chars[g.int(chars.length)] = g.pick(POOL);
      return chars.join('');
    }
    case 2: {
      // Flip one bit of one decoded segment, re-encoded canonically.
      const i = g.int(3);
      const bytes = Buffer.from(segments[i]!, 'base64url');
      const bit = g.int(bytes.length * 8);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
      segments[i] = b64(bytes);
      return segments.join('.');
    }
    case 3: {
      // Swap, drop or duplicate segments.
      const shuffled = [...segments];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = g.int(i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const op = g.int(3);
      if (op === 0) shuffled.splice(g.int(3), 1);
      if (op === 1) shuffled.splice(g.int(3), 0, g.pick(segments));
      return shuffled.join(g.pick(['.', '.', '..', '']));
    }
    case 4:
      return g.chance(0.5) ? token.slice(0, g.int(token.length)) : token.slice(1 + g.int(token.length - 1));
    case 5:
      return token + randomString(g, 20).padStart(1, '=');
    case 6: {
      // Random bytes as one segment.
      const i = g.int(3);
      segments[i] = b64(Buffer.from(Array.from({ length: g.int(80) }, () => g.int(256))));
      return segments.join('.');
    }
    case 7: {
      // Another valid token's header or payload with this one's signature.
      const other = g.pick(others).split('.');
      const i = g.int(2);
      segments[i] = other[i]!;
      return segments.join('.');
    }
    case 8: {
      // A weird header (unsigned: the signature is the original one).
      const header = g.pick([
        `{"alg":"HS256","x":${weirdJson(g)}}`,
        `{"alg":${weirdJson(g)}}`,
        `{"__proto__":{"alg":"HS256"},"typ":"JWT"}`,
        `{"alg":"none"}`,
        weirdJson(g),
      ]);
      segments[0] = b64(header);
      return segments.join('.');
    }
    default: {
      // Non-canonical spellings of the same bytes.
      const i = g.int(3);
      const op = g.int(3);
      if (op === 0) segments[i] = `${segments[i]}=`;
      else if (op === 1)
        segments[i] = segments[i]!.replaceAll('-', '+').replaceAll('_', '/') + (g.chance(0.5) ? '+' : '');
      else segments[i] = `${segments[i]!.slice(0, 3)} ${segments[i]!.slice(3)}`;
      return segments.join('.');
    }
  }
}

/** Correctly signed HS256 tokens with awkward contents: refused, or (for harmless extras) accepted. */
function signedVariant(g: Gen, nowS: number): { token: string; expectOk: boolean | 'any' } {
  const base: Record<string, string> = {
    iss: JSON.stringify(ISS),
    aud: JSON.stringify(AUD),
    sub: '"user-1"',
    jti: JSON.stringify(`jti-${g.int(1e9)}`),
    iat: String(nowS),
    exp: String(nowS + 900),
  };
  const text = (members: Record<string, string>, prefix = '') =>
    `{${prefix}${Object.entries(members)
      .map(([k, v]) => `${JSON.stringify(k)}:${v}`)
      .join(',')}}`;
  const header = '{"alg":"HS256","typ":"JWT"}';
  switch (g.int(6)) {
    case 0: {
      // A required claim missing, possibly hidden under __proto__.
      const name = g.pick(REQUIRED);
      const value = base[name]!;
      delete base[name];
      const prefix = g.chance(0.5) ? `"__proto__":{${JSON.stringify(name)}:${value}},` : '';
      return { token: hs256Raw(header, text(base, prefix)), expectOk: false };
    }
    case 1: {
      // A claim with a value it must not have; duplicates keep the last member.
      const name = g.pick([...REQUIRED, 'nbf'] as const);
      const bad = badClaimValue(g, name, nowS);
      if (g.chance(0.3) && name !== 'nbf') {
        return {
          token: hs256Raw(header, `${text(base).slice(0, -1)},${JSON.stringify(name)}:${bad}}`),
          expectOk: false,
        };
      }
      base[name] = bad;
      return { token: hs256Raw(header, text(base)), expectOk: false };
    }
    case 2: {
      // A signed header that must be refused.
      const bad = g.pick([
        `{"alg":${weirdJson(g)}}`,
        '{"alg":"none"}',
        '{"alg":"HS256","crit":["exp"]}',
        `{"alg":"HS256","typ":${weirdJson(g)}}`,
        '{"__proto__":{"alg":"HS256"}}',
        `{"alg":"HS256","kid":${g.pick(['1', 'null', '[]', '{}'])}}`,
        weirdJson(g),
      ]);
      const token = hs256Raw(bad, text(base));
      // A weird typ can, rarely, be a string like "JWT": leave that case to the oracle.
      return {
        token,
        expectOk: bad.includes('"typ"') && /"typ":"(application\/)?(at\+)?jwt"/i.test(bad) ? 'any' : false,
      };
    }
    case 3:
      // A payload that is not a JSON object.
      return {
        token: hs256Raw(
          header,
          g.pick([weirdJson(g), '', 'nul', '{"sub":', `${text(base)}x`, `\ufeff${text(base)}`]),
        ),
        expectOk: false,
      };
    case 4: {
      // Harmless extra claims with awkward values: accepted.
      const extras: Record<string, string> = {};
      for (let n = 1 + g.int(4); n > 0; n--) {
        const key = g.pick(['x', 'constructor', 'toString', 'hasOwnProperty', 'role', '😀', 'a.b', '']);
        if (!REQUIRED.includes(key as (typeof REQUIRED)[number])) extras[key] = weirdJson(g);
      }
      const proto = g.chance(0.5) ? `"__proto__":${weirdJson(g)},` : '';
      const token = hs256Raw(header, text({ ...base, ...extras }, proto));
      // Deep nesting can push it past maxTokenBytes (8192), which is a refusal.
      return { token, expectOk: token.length <= 8192 };
    }
    default: {
      // Valid except for the audience array or issuer spelling.
      const op = g.int(3);
      if (op === 0) base.aud = JSON.stringify(['x', AUD, 'y']);
      if (op === 1) base.aud = JSON.stringify(['x', `${AUD}\u0000`]);
      if (op === 2) base.iss = JSON.stringify(ISS.toUpperCase());
      return { token: hs256Raw(header, text(base)), expectOk: op === 0 };
    }
  }
}

describe('jwt fuzz', () => {
  const clock = new FakeClock();
  const nowS = clock.now() / 1000;
  const issuer = createIssuer({ secret: SECRET, issuer: ISS, audience: AUD, ttlS: 900, clock });
  const hsToken = issuer.issue('user-1').token;

  it(`never throws and refuses every mutation of an HS256 token (seed ${SEED})`, () => {
    const g = new Gen(SEED);
    const h: Harness = {
      verifier: createVerifier({ issuer: ISS, audience: AUD, secret: SECRET, clock }),
      valid: new Set([hsToken]),
      reasons: new Map(),
      calls: 0,
    };
    const others = [issuer.issue('user-2').token, hsTokenWithAudArray()];
    check(h, hsToken, true, 'the valid token');
    for (let i = 0; i < 20_000; i++) {
      const token = mutate(g, hsToken, others);
      check(h, token, h.valid.has(token) || others.includes(token), 'mutation');
      // The valid token keeps verifying in between (and from the cache).
      if (i % 1000 === 0) check(h, hsToken, true, 'the valid token');
    }
    let accepted = 0;
    for (let i = 0; i < 4000; i++) {
      const { token, expectOk } = signedVariant(g, nowS);
      if (check(h, token, expectOk, 'signed variant').ok) accepted++;
    }
    assert.ok(h.calls >= 24_000);
    assert.ok(accepted > 200, `harmless extras were accepted ${accepted} times`);
    // The mutations reach deep into the verifier, not just its first check: every reason but
    // the two they are not built to reach (tokens over 8 KiB, unknown key ids).
    for (const reason of VERIFY_REASONS.filter((r) => r !== 'too_large' && r !== 'unknown_key')) {
      assert.ok((h.reasons.get(reason) ?? 0) > 0, `no mutation was refused as ${reason}`);
    }
  });

  function hsTokenWithAudArray(): string {
    return hs256Raw(
      '{"alg":"HS256"}',
      JSON.stringify({ iss: ISS, aud: [AUD], sub: 'u', jti: 'j', iat: nowS, exp: nowS + 900 }),
    );
  }

  it(`does the same with every algorithm allowed and no cache (seed ${SEED})`, () => {
    const g = new Gen(SEED + 1);
    const rsa = keyPair('rsa', 'r');
    const ec = keyPair('ec', 'e');
    const ed = keyPair('ed25519', 'd');
    const payload = { iss: ISS, aud: AUD, sub: 'user-1', jti: 'j-1', iat: nowS, exp: nowS + 900 };
    const tokens = [
      hsToken,
      signAsym('RS256', { kid: 'r', typ: 'JWT' }, payload, rsa.privateKey),
      signAsym('ES256', { kid: 'e', typ: 'JWT' }, payload, ec.privateKey),
      signAsym('EdDSA', { kid: 'd', typ: 'JWT' }, payload, ed.privateKey),
    ];
    const h: Harness = {
      verifier: createVerifier({
        issuer: ISS,
        audience: AUD,
        algorithms: ['HS256', 'RS256', 'ES256', 'EdDSA'],
        secret: SECRET,
        publicKeys: [rsa.jwk, ec.jwk, ed.jwk],
        maxTokenBytes: 2048,
        cacheSize: 0,
        clock,
      }),
      valid: new Set(tokens),
      reasons: new Map(),
      calls: 0,
    };
    for (const token of tokens) check(h, token, true, 'a valid token');
    for (let i = 0; i < 6000; i++) {
      const token = mutate(g, g.pick(tokens), tokens);
      check(h, token, h.valid.has(token), 'mutation');
    }
    // Tokens far over the limit, of every shape.
    for (let i = 0; i < 200; i++) {
      const huge = g.pick(tokens) + '.'.repeat(g.int(3)) + 'A'.repeat(2048 + g.int(100_000));
      assert.equal(check(h, huge, false, 'huge').ok, false);
    }
    for (const reason of ['malformed', 'alg_not_allowed', 'bad_signature', 'unknown_key', 'too_large']) {
      assert.ok((h.reasons.get(reason) ?? 0) > 0, `no mutation was refused as ${reason}`);
    }
  });

  it(`extractBearer never throws and finds exactly one token (seed ${SEED})`, () => {
    const g = new Gen(SEED + 2);
    const tokenChars = `${B64URL}.~+/`;
    const isTokenChar = (c: string) => tokenChars.includes(c) || c === '=';
    for (let i = 0; i < 10_000; i++) {
      // Random headers: whatever comes back is consistent with the input.
      const header = g.chance(0.5)
        ? randomString(g, 60)
        : `${g.pick(['Bearer ', 'bearer', 'BEARER  ', ' Bearer '])}${randomString(g, 40)}`;
      const result = extractBearer(header);
      if ('token' in result) {
        assert.ok(result.token.length > 0 && [...result.token].every(isTokenChar), JSON.stringify(header));
        assert.ok(/^bearer +/i.test(header.trim()), JSON.stringify(header));
        assert.ok(header.replace(/[ \t]+$/, '').endsWith(result.token), JSON.stringify(header));
      } else if (result.error === 'missing_token') {
        assert.equal(header.replace(/[ \t]/g, ''), '', JSON.stringify(header));
      } else {
        assert.equal(result.error, 'invalid_token');
      }

      // Built headers: a well-formed one is read back exactly; one stray character spoils it.
      let token = '';
      for (let n = 1 + g.int(60); n > 0; n--) token += g.pick([...tokenChars]);
      token += '='.repeat(g.int(3));
      const scheme = [...'bearer'].map((c) => (g.chance(0.5) ? c.toUpperCase() : c)).join('');
      const ows = () => g.pick(['', ' ', '\t', ' \t ']);
      const good = `${ows()}${scheme}${' '.repeat(1 + g.int(3))}${token}${ows()}`;
      assert.deepEqual(extractBearer(good), { token }, JSON.stringify(good));
      const at = 1 + g.int(token.length);
      const spoiled = `${scheme} ${token.slice(0, at)}${g.pick([' ', ',', '"', 'é', '\n', '\0', '=x'])}${token.slice(at)}x`;
      assert.deepEqual(extractBearer(spoiled), { error: 'invalid_token' }, JSON.stringify(spoiled));
    }
    for (const value of [undefined, null, 42, {}, [], 'Bearer'] as unknown[]) {
      assert.doesNotThrow(() => extractBearer(value as string));
    }
  });
});
