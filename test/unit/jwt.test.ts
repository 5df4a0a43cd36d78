import assert from 'node:assert/strict';
import type { JsonWebKey } from 'node:crypto';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DEVELOPMENT_JWT_SECRET, loadJwtConfig } from '../../src/auth/jwt/config.ts';
import { createIssuer } from '../../src/auth/jwt/issuer.ts';
import type { TokenVerifier, VerifierOptions, VerifyResult } from '../../src/auth/jwt/verifier.ts';
import { createVerifier, extractBearer } from '../../src/auth/jwt/verifier.ts';
import { isCachecastError } from '../../src/errors.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { b64, keyPair, part, signAsym, signHs256 } from '../support/jwt-sign.ts';
import { waitFor } from '../support/wait.ts';

const SECRET = 'test-secret-that-is-long-enough-0123456789';
const OTHER_SECRET = 'another-secret-that-is-long-enough-98765';
const ISS = 'cachecast';
const AUD = 'cachecast';
const SKEW = 30;

type Json = Record<string, unknown>;

/** HS256 over header and payload given as objects or raw JSON text. */
const hs256 = (header: unknown, payload: unknown, secret: string | Buffer = SECRET): string =>
  signHs256(header, payload, secret);

const RSA = keyPair('rsa', 'rsa-1');
const EC = keyPair('ec', 'ec-1');
const ED = keyPair('ed25519', 'ed-1');

function claims(clock: FakeClock, overrides: Json = {}): Json {
  const now = Math.floor(clock.now() / 1000);
  return { iss: ISS, aud: AUD, sub: 'user-1', jti: 'jti-1', iat: now, exp: now + 900, ...overrides };
}

function hsVerifier(clock: FakeClock, options: Partial<VerifierOptions> = {}): TokenVerifier {
  return createVerifier({ issuer: ISS, audience: AUD, secret: SECRET, clock, ...options });
}

function assertRefused(result: VerifyResult, reason: string, error = 'invalid_token'): void {
  assert.equal(result.ok, false, `expected ${reason}, got ok`);
  if (!result.ok) {
    assert.equal(result.reason, reason);
    assert.equal(result.error, error);
  }
}

describe('issuer', () => {
  it('issues HS256 tokens the verifier accepts, with every claim', () => {
    const clock = new FakeClock();
    const issuer = createIssuer({ secret: SECRET, issuer: ISS, audience: AUD, ttlS: 900, clock });
    const issued = issuer.issue('user-42');
    const nowS = clock.now() / 1000;
    assert.equal(issued.expiresAt, nowS + 900);
    assert.equal(issued.expiresIn, 900);
    assert.match(issued.jti, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(issuer.issue('user-42').jti, issued.jti);
    const [header] = issued.token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(header!, 'base64url').toString()), { alg: 'HS256', typ: 'JWT' });

    const result = hsVerifier(clock).verify(issued.token);
    assert.ok(result.ok);
    assert.deepEqual(
      { ...result.claims },
      { iss: ISS, aud: AUD, sub: 'user-42', jti: issued.jti, iat: nowS, exp: nowS + 900 },
    );
    // Another secret does not verify it.
    assertRefused(
      createVerifier({ issuer: ISS, audience: AUD, secret: OTHER_SECRET, clock }).verify(issued.token),
      'bad_signature',
    );
  });

  it('refuses subjects the verifier would refuse, and bad options', () => {
    const issuer = createIssuer({ secret: SECRET, issuer: ISS, audience: AUD, ttlS: 60 });
    for (const sub of ['', 'x'.repeat(257), 'a b', 'a\r\nx-admin: 1', 'é', 42 as unknown as string]) {
      assert.throws(() => issuer.issue(sub), TypeError, JSON.stringify(sub));
    }
    assert.ok(issuer.issue('x'.repeat(256)).token);
    const base = { secret: SECRET, issuer: ISS, audience: AUD, ttlS: 60 };
    assert.throws(() => createIssuer({ ...base, secret: 'short' }), RangeError);
    assert.throws(() => createIssuer({ ...base, ttlS: 0 }), RangeError);
    assert.throws(() => createIssuer({ ...base, ttlS: 86_401 }), RangeError);
    assert.throws(() => createIssuer({ ...base, ttlS: 1.5 }), TypeError);
    assert.throws(() => createIssuer({ ...base, issuer: '' }), TypeError);
  });
});

describe('verifier: structure and algorithms', () => {
  const clock = new FakeClock();
  const verifier = hsVerifier(clock, { cacheSize: 0 });
  const header = { alg: 'HS256', typ: 'JWT' };

  it('accepts a hand-built token', () => {
    const result = verifier.verify(hs256(header, claims(clock)));
    assert.ok(result.ok);
    assert.equal(result.claims.sub, 'user-1');
  });

  it('refuses a forged or altered signature', () => {
    assertRefused(verifier.verify(hs256(header, claims(clock), OTHER_SECRET)), 'bad_signature');
    const good = hs256(header, claims(clock));
    const [h, p, s] = good.split('.') as [string, string, string];
    // Same header, different payload: the signature no longer matches.
    assertRefused(verifier.verify(`${h}.${part(claims(clock, { sub: 'admin' }))}.${s}`), 'bad_signature');
    const flipped = Buffer.from(s, 'base64url');
    flipped[0]! ^= 1;
    assertRefused(verifier.verify(`${h}.${p}.${b64(flipped)}`), 'bad_signature');
    // Truncated and extended signatures are refused before comparing.
    assertRefused(verifier.verify(`${h}.${p}.${b64(flipped.subarray(0, 31))}`), 'bad_signature');
    assertRefused(
      verifier.verify(`${h}.${p}.${b64(Buffer.concat([flipped, Buffer.from([0])]))}`),
      'bad_signature',
    );
  });

  it('refuses non-canonical base64url, so a signature has one spelling', () => {
    const good = hs256(header, claims(clock));
    assert.ok(verifier.verify(good).ok);
    const [h, p, s] = good.split('.') as [string, string, string];
    // 32 bytes -> 43 characters: the last one carries 2 unused bits.
    const last = s.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const respelled = alphabet[alphabet.indexOf(last) ^ 1]!;
    assert.deepEqual(Buffer.from(s.slice(0, -1) + respelled, 'base64url'), Buffer.from(s, 'base64url'));
    assertRefused(verifier.verify(`${h}.${p}.${s.slice(0, -1)}${respelled}`), 'malformed');
    assertRefused(verifier.verify(`${h}.${p}.${s}=`), 'malformed');
    assertRefused(verifier.verify(`${h}.${p}.${s.slice(0, 20)} ${s.slice(20)}`), 'malformed');
    assertRefused(verifier.verify(`${h}.${p}.${s.slice(0, 10)}+${s.slice(11)}`), 'malformed');
    assertRefused(verifier.verify(`${h}.${p}.${s.slice(0, 10)}/${s.slice(11)}`), 'malformed');
    assertRefused(verifier.verify(`${h}=.${p}.${s}`), 'malformed');
  });

  it('refuses tokens that are not three segments of JSON objects', () => {
    const good = hs256(header, claims(clock));
    const [h, p, s] = good.split('.') as [string, string, string];
    for (const token of [
      '',
      'abc',
      `${h}.${p}`,
      `${h}.${p}.${s}.${s}`,
      `${h}.${p}.`,
      `.${p}.${s}`,
      `${h}..${s}`,
      '..',
      hs256('[1]', claims(clock)),
      hs256('"HS256"', claims(clock)),
      hs256('{"alg":"HS256"', claims(clock)),
      hs256('\ufeff{"alg":"HS256"}', claims(clock)),
      hs256(header, '[]'),
      hs256(header, 'null'),
      hs256(header, 'not json'),
    ]) {
      assertRefused(verifier.verify(token), 'malformed');
    }
    // Invalid UTF-8 in a correctly signed payload.
    const input = `${h}.${b64(Buffer.concat([Buffer.from('{"sub":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]))}`;
    const signed = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
    assertRefused(verifier.verify(signed), 'malformed');
    assertRefused(verifier.verify(undefined as unknown as string), 'malformed');
    assertRefused(verifier.verify(42 as unknown as string), 'malformed');
  });

  it('refuses alg none, with or without a signature, and every algorithm off the allowlist', () => {
    const payload = claims(clock);
    const unsigned = `${part({ alg: 'none', typ: 'JWT' })}.${part(payload)}.`;
    assertRefused(verifier.verify(unsigned), 'alg_not_allowed');
    const withSignature = hs256({ alg: 'none' }, payload);
    assertRefused(verifier.verify(withSignature), 'alg_not_allowed');
    for (const alg of ['None', 'NONE', 'hs256', 'HS512', 'HS384', 'RS256', 'PS256', 'ES256', 'EdDSA', '']) {
      assertRefused(verifier.verify(hs256({ alg }, payload)), 'alg_not_allowed');
    }
    for (const alg of [undefined, null, 1, ['HS256'], { alg: 'HS256' }]) {
      assertRefused(verifier.verify(hs256({ alg }, payload)), 'malformed');
    }
    // Only own members count: an alg hidden under __proto__ is no alg.
    assertRefused(verifier.verify(hs256('{"__proto__":{"alg":"HS256"}}', payload)), 'malformed');
  });

  it('refuses crit, a foreign typ and a non-string kid; ignores jku, x5u and jwk', () => {
    const payload = claims(clock);
    assertRefused(verifier.verify(hs256({ alg: 'HS256', crit: ['exp'], exp: 1 }, payload)), 'malformed');
    assertRefused(verifier.verify(hs256({ alg: 'HS256', crit: [] }, payload)), 'malformed');
    for (const typ of ['JWE', 'secevent+jwt', 'logout+jwt', '', 1]) {
      assertRefused(verifier.verify(hs256({ alg: 'HS256', typ }, payload)), 'malformed');
    }
    for (const typ of ['JWT', 'jwt', 'application/jwt', 'at+jwt', 'application/at+JWT']) {
      assert.ok(verifier.verify(hs256({ alg: 'HS256', typ }, payload)).ok, String(typ));
    }
    assertRefused(verifier.verify(hs256({ alg: 'HS256', kid: 7 }, payload)), 'malformed');
    const extras = {
      jku: 'http://127.0.0.1:1/jwks',
      x5u: 'http://127.0.0.1:1/x5u',
      jwk: RSA.jwk,
      kid: 'whatever',
    };
    assert.ok(verifier.verify(hs256({ alg: 'HS256', ...extras }, payload)).ok);
  });

  it('refuses oversized tokens before decoding them', () => {
    const small = hsVerifier(clock, { maxTokenBytes: 512, cacheSize: 0 });
    const big = hs256(header, claims(clock, { pad: 'x'.repeat(600) }));
    assert.ok(verifier.verify(big).ok, 'valid with the default limit');
    assertRefused(small.verify(big), 'too_large');
    assertRefused(small.verify('a'.repeat(513)), 'too_large');
    assertRefused(small.verify('a'.repeat(512)), 'malformed');
    assertRefused(verifier.verify('.'.repeat(8193)), 'too_large');
    const fits = hs256(header, claims(clock));
    assert.ok(hsVerifier(clock, { maxTokenBytes: fits.length }).verify(fits).ok);
    assertRefused(hsVerifier(clock, { maxTokenBytes: fits.length - 1 }).verify(fits), 'too_large');
  });
});

describe('verifier: claims', () => {
  const clock = new FakeClock();
  const verifier = hsVerifier(clock, { cacheSize: 0 });
  const check = (payload: unknown) => verifier.verify(hs256({ alg: 'HS256', typ: 'JWT' }, payload));

  it('requires exp, iat, jti, sub, iss and aud', () => {
    for (const name of ['exp', 'iat', 'jti', 'sub', 'iss', 'aud']) {
      const payload = claims(clock);
      delete payload[name];
      assertRefused(check(payload), 'missing_claim');
      // Moved under __proto__, it is still missing.
      assertRefused(
        check(
          JSON.stringify(payload).replace(
            /^\{/,
            `{"__proto__":{"${name}":${JSON.stringify(claims(clock)[name])}},`,
          ),
        ),
        'missing_claim',
      );
    }
  });

  it('does not take claims from a polluted Object.prototype', () => {
    const payload = claims(clock);
    delete payload.sub;
    const proto = Object.prototype as Record<string, unknown>;
    proto.sub = 'polluted';
    try {
      assertRefused(check(payload), 'missing_claim');
    } finally {
      delete proto.sub;
    }
  });

  it('requires well-formed claim values', () => {
    const nowS = Math.floor(clock.now() / 1000);
    for (const overrides of [
      { sub: '' },
      { sub: 'x'.repeat(257) },
      { sub: 42 },
      { sub: null },
      { sub: 'two words' },
      { sub: 'line\nbreak' },
      { sub: 'ünïcode' },
      { jti: '' },
      { jti: 'x'.repeat(257) },
      { jti: ['a'] },
      { jti: 'tab\there' },
      { exp: String(nowS + 900) },
      { exp: null },
      { iat: true },
      { nbf: 'soon' },
      { nbf: null },
      { iss: 7 },
      { aud: 7 },
      { aud: { 0: AUD } },
      { aud: [AUD, 7] },
    ]) {
      assertRefused(check(claims(clock, overrides)), 'invalid_claim');
    }
    // JSON has no Infinity, but 1e999 parses to it: numbers must be finite.
    const text = JSON.stringify(claims(clock)).replace(/"exp":\d+/, '"exp":1e999');
    assert.ok(text.includes('1e999'));
    assertRefused(check(text), 'invalid_claim');
    assertRefused(check(JSON.stringify(claims(clock)).replace(/"iat":\d+/, '"iat":-1e999')), 'invalid_claim');
    // The limits themselves are fine.
    assert.ok(check(claims(clock, { sub: 'x'.repeat(256), jti: '~'.repeat(256), iat: nowS + 0.5 })).ok);
  });

  it('checks issuer and audience', () => {
    assertRefused(check(claims(clock, { iss: 'someone-else' })), 'wrong_issuer');
    assertRefused(check(claims(clock, { iss: 'Cachecast' })), 'wrong_issuer');
    assertRefused(check(claims(clock, { aud: 'other' })), 'wrong_audience');
    assertRefused(check(claims(clock, { aud: [] })), 'wrong_audience');
    assertRefused(check(claims(clock, { aud: ['a', 'b'] })), 'wrong_audience');
    assertRefused(check(claims(clock, { aud: [`${AUD} `] })), 'wrong_audience');
    const result = check(claims(clock, { aud: ['other', AUD] }));
    assert.ok(result.ok);
    assert.deepEqual(result.claims.aud, ['other', AUD]);
  });

  it('applies the clock skew at each edge of exp, nbf and iat', () => {
    const nowS = clock.now() / 1000;
    // exp + skew <= now: expired.
    assertRefused(check(claims(clock, { exp: nowS - SKEW })), 'expired', 'token_expired');
    assertRefused(check(claims(clock, { iat: nowS - 1000, exp: nowS - 1000 })), 'expired', 'token_expired');
    assert.ok(check(claims(clock, { exp: nowS - SKEW + 1 })).ok);
    assert.ok(check(claims(clock, { exp: nowS - SKEW + 0.001 })).ok);
    // nbf later than now + skew: not yet valid.
    assertRefused(check(claims(clock, { nbf: nowS + SKEW + 1 })), 'not_yet_valid');
    assertRefused(check(claims(clock, { nbf: nowS + SKEW + 0.001 })), 'not_yet_valid');
    assert.ok(check(claims(clock, { nbf: nowS + SKEW })).ok);
    // iat more than skew in the future.
    assertRefused(check(claims(clock, { iat: nowS + SKEW + 1 })), 'issued_in_future');
    assert.ok(check(claims(clock, { iat: nowS + SKEW })).ok);

    const strict = hsVerifier(clock, { clockSkewS: 0, cacheSize: 0 });
    const strictCheck = (payload: Json) => strict.verify(hs256({ alg: 'HS256' }, payload));
    assertRefused(strictCheck(claims(clock, { exp: nowS })), 'expired', 'token_expired');
    assert.ok(strictCheck(claims(clock, { exp: nowS + 1 })).ok);
    assertRefused(strictCheck(claims(clock, { nbf: nowS + 1 })), 'not_yet_valid');
    assert.ok(strictCheck(claims(clock, { nbf: nowS })).ok);
    assertRefused(strictCheck(claims(clock, { iat: nowS + 1 })), 'issued_in_future');
  });

  it('returns frozen claims, with extra claims kept', () => {
    const result = check(claims(clock, { role: 'user', nested: { a: [1] } }));
    assert.ok(result.ok);
    assert.equal(result.claims.role, 'user');
    assert.ok(Object.isFrozen(result.claims));
    assert.ok(Object.isFrozen((result.claims.nested as { a: number[] }).a));
    assert.throws(() => {
      (result.claims as { sub: string }).sub = 'admin';
    }, TypeError);
  });
});

describe('verifier: cache', () => {
  it('re-checks expiry on every hit, with a fake clock', async () => {
    const clock = new FakeClock();
    const verifier = hsVerifier(clock);
    const token = hs256({ alg: 'HS256' }, claims(clock, { exp: clock.now() / 1000 + 60 }));
    assert.ok(verifier.verify(token).ok);
    assert.deepEqual(verifier.stats(), { cacheSize: 1, cacheHits: 0, cacheMisses: 1, keys: 1 });
    const again = verifier.verify(token);
    assert.ok(again.ok);
    assert.deepEqual(verifier.stats(), { cacheSize: 1, cacheHits: 1, cacheMisses: 1, keys: 1 });

    await clock.advance((60 + SKEW - 1) * 1000);
    assert.ok(verifier.verify(token).ok, 'inside the skew');
    await clock.advance(1000);
    assertRefused(verifier.verify(token), 'expired', 'token_expired');
    assert.equal(verifier.stats().cacheHits, 3);
    assert.equal(verifier.stats().cacheSize, 0, 'an expired token leaves the cache');
    assertRefused(verifier.verify(token), 'expired', 'token_expired');
  });

  it('re-checks nbf and iat on a hit when the clock goes back', () => {
    const fake = new FakeClock();
    let offsetMs = 0;
    const clock = {
      now: () => fake.now() + offsetMs,
      setTimeout: fake.setTimeout.bind(fake),
      clearTimeout: fake.clearTimeout.bind(fake),
    };
    const verifier = hsVerifier(fake, { clock });
    const nowS = fake.now() / 1000;
    const token = hs256({ alg: 'HS256' }, claims(fake, { nbf: nowS + 10, iat: nowS - 20 }));
    assert.ok(verifier.verify(token).ok);
    offsetMs = -(SKEW + 11) * 1000;
    assertRefused(verifier.verify(token), 'not_yet_valid');
    assert.equal(verifier.stats().cacheHits, 1);
    assert.equal(verifier.stats().cacheSize, 1, 'kept: it becomes valid again');
    offsetMs = 0;
    assert.ok(verifier.verify(token).ok);
  });

  it('caches only successes, is bounded, evicts the oldest first, and can be disabled', () => {
    const clock = new FakeClock();
    const verifier = hsVerifier(clock, { cacheSize: 2 });
    const tokens = ['a', 'b', 'c'].map((jti) => hs256({ alg: 'HS256' }, claims(clock, { jti })));
    assertRefused(verifier.verify(hs256({ alg: 'HS256' }, claims(clock), OTHER_SECRET)), 'bad_signature');
    assert.equal(verifier.stats().cacheSize, 0);
    for (const token of tokens) assert.ok(verifier.verify(token).ok);
    assert.equal(verifier.stats().cacheSize, 2);
    assert.ok(verifier.verify(tokens[2]!).ok);
    assert.ok(verifier.verify(tokens[1]!).ok);
    assert.equal(verifier.stats().cacheHits, 2);
    assert.ok(verifier.verify(tokens[0]!).ok, 'evicted, verified again');
    assert.equal(verifier.stats().cacheMisses, 5);

    const uncached = hsVerifier(clock, { cacheSize: 0 });
    assert.ok(uncached.verify(tokens[0]!).ok);
    assert.ok(uncached.verify(tokens[0]!).ok);
    assert.deepEqual(uncached.stats(), { cacheSize: 0, cacheHits: 0, cacheMisses: 0, keys: 1 });
  });
});

describe('verifier: public keys', () => {
  const clock = new FakeClock();
  const allAsym = (options: Partial<VerifierOptions> = {}) =>
    createVerifier({
      issuer: ISS,
      audience: AUD,
      algorithms: ['RS256', 'ES256', 'EdDSA'],
      publicKeys: [RSA.jwk, EC.jwk, ED.jwk],
      clock,
      cacheSize: 0,
      ...options,
    });

  it('verifies RS256, ES256 and EdDSA with static keys, with and without kid', () => {
    const verifier = allAsym();
    assert.equal(verifier.stats().keys, 3);
    for (const [alg, pair] of [
      ['RS256', RSA],
      ['ES256', EC],
      ['EdDSA', ED],
    ] as const) {
      const kid = pair.jwk.kid as string;
      assert.ok(
        verifier.verify(signAsym(alg, { kid }, claims(clock), pair.privateKey)).ok,
        `${alg} with kid`,
      );
      assert.ok(verifier.verify(signAsym(alg, {}, claims(clock), pair.privateKey)).ok, `${alg} without kid`);
      assertRefused(
        verifier.verify(signAsym(alg, { kid: 'nope' }, claims(clock), pair.privateKey)),
        'unknown_key',
      );
      const other = keyPair(alg === 'RS256' ? 'rsa' : alg === 'ES256' ? 'ec' : 'ed25519');
      assertRefused(
        verifier.verify(signAsym(alg, { kid }, claims(clock), other.privateKey)),
        'bad_signature',
      );
      assertRefused(verifier.verify(signAsym(alg, {}, claims(clock), other.privateKey)), 'bad_signature');
      // Claims are checked as for HS256.
      assertRefused(
        verifier.verify(signAsym(alg, { kid }, claims(clock, { exp: 1 }), pair.privateKey)),
        'expired',
        'token_expired',
      );
    }
  });

  it('binds each key to its algorithm', () => {
    const verifier = allAsym();
    // A kid names a key only within the token's algorithm.
    assertRefused(
      verifier.verify(signAsym('ES256', { kid: 'rsa-1' }, claims(clock), EC.privateKey)),
      'unknown_key',
    );
    // ES256 wants raw r || s: a DER signature is refused.
    const input = `${part({ alg: 'ES256', kid: 'ec-1' })}.${part(claims(clock))}`;
    const der = sign('sha256', Buffer.from(input), EC.privateKey);
    assertRefused(verifier.verify(`${input}.${b64(der)}`), 'bad_signature');
    // Only RS256 allowed: the other keys are refused at construction.
    assert.throws(
      () => createVerifier({ issuer: ISS, audience: AUD, algorithms: ['RS256'], publicKeys: [EC.jwk] }),
      /publicKeys\[0\].*ES256/,
    );
  });

  it('refuses HS256 tokens MACed with the public key (key confusion)', () => {
    const pem = RSA.publicKey.export({ format: 'pem', type: 'spki' });
    const der = RSA.publicKey.export({ format: 'der', type: 'spki' });
    const jwkText = JSON.stringify(RSA.jwk);
    const forgeries = [pem, der, Buffer.from(jwkText), Buffer.from(RSA.jwk.n!, 'base64url')].map((key) =>
      hs256({ alg: 'HS256', kid: 'rsa-1' }, claims(clock), key as Buffer),
    );
    const rsOnly = createVerifier({
      issuer: ISS,
      audience: AUD,
      algorithms: ['RS256'],
      publicKeys: [RSA.jwk],
      clock,
    });
    for (const token of forgeries) assertRefused(rsOnly.verify(token), 'alg_not_allowed');
    const both = createVerifier({
      issuer: ISS,
      audience: AUD,
      algorithms: ['RS256', 'HS256'],
      secret: SECRET,
      publicKeys: [RSA.jwk],
      clock,
    });
    for (const token of forgeries) assertRefused(both.verify(token), 'bad_signature');
    assert.ok(both.verify(signAsym('RS256', { kid: 'rsa-1' }, claims(clock), RSA.privateKey)).ok);
    assert.ok(both.verify(hs256({ alg: 'HS256' }, claims(clock))).ok);
    // An RS256 token signed with the HMAC secret is no RS256 signature either.
    const input = `${part({ alg: 'RS256' })}.${part(claims(clock))}`;
    const mac = createHmac('sha256', SECRET).update(input).digest('base64url');
    assertRefused(both.verify(`${input}.${mac}`), 'bad_signature');
  });

  it('refuses weak, symmetric and mismatched keys at construction', () => {
    const base = {
      issuer: ISS,
      audience: AUD,
      algorithms: ['RS256', 'ES256', 'EdDSA'] as VerifierOptions['algorithms'],
    };
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const x25519 = generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' });
    const bad: [JsonWebKey, RegExp][] = [
      [weak, /1024 bits/],
      [p384, /P-384/],
      [x25519, /X25519/],
      [{ kty: 'oct', k: b64(SECRET) }, /oct/],
      [{ ...RSA.jwk, alg: 'RS512' }, /RS512/],
      [{ ...RSA.jwk, use: 'enc' }, /use/],
      [{ ...RSA.jwk, key_ops: ['encrypt'] }, /key_ops/],
      [{ ...EC.jwk, x: 'AAAA' }, /not a valid EC/],
      [{ kty: 'RSA' }, /"n" is missing/],
    ];
    for (const [jwk, message] of bad) {
      assert.throws(() => createVerifier({ ...base, publicKeys: [jwk] }), message);
    }
    const ed = { ...ED.jwk, alg: 'Ed25519', use: 'sig', key_ops: ['verify'] };
    assert.ok(createVerifier({ ...base, algorithms: ['EdDSA'], publicKeys: [ed] }));
  });

  it('checks its options', () => {
    const base = { issuer: ISS, audience: AUD, secret: SECRET };
    assert.throws(() => createVerifier({ issuer: ISS, audience: AUD }), /secret is required/);
    assert.throws(() => createVerifier({ ...base, secret: 'x'.repeat(31) }), RangeError);
    assert.ok(createVerifier({ ...base, secret: new Uint8Array(32) }));
    assert.throws(() => createVerifier({ ...base, issuer: '' }), TypeError);
    assert.throws(() => createVerifier({ ...base, algorithms: [] }), TypeError);
    assert.throws(() => createVerifier({ ...base, algorithms: ['none' as 'HS256'] }), RangeError);
    assert.throws(() => createVerifier({ ...base, algorithms: ['RS256'] }), /neither publicKeys nor jwksUrl/);
    assert.throws(
      () => createVerifier({ ...base, algorithms: ['HS256', 'ES256'], jwksUrl: 'file:///k' }),
      TypeError,
    );
    assert.throws(() => createVerifier({ ...base, algorithms: ['ES256'], jwksUrl: 'not a url' }), TypeError);
    assert.throws(() => createVerifier({ ...base, clockSkewS: 301 }), RangeError);
    assert.throws(() => createVerifier({ ...base, clockSkewS: -1 }), RangeError);
    assert.throws(() => createVerifier({ ...base, clockSkewS: 1.5 }), TypeError);
    assert.throws(() => createVerifier({ ...base, maxTokenBytes: 0 }), RangeError);
    assert.throws(() => createVerifier({ ...base, cacheSize: -1 }), RangeError);
    assert.throws(() => createVerifier({ ...base, jwksRefreshMs: 10 }), RangeError);
  });
});

interface JwksServer {
  url: string;
  requests: number;
  keys: JsonWebKey[];
  status: number;
  body: string | undefined;
  close(): Promise<void>;
}

async function startJwksServer(keys: JsonWebKey[]): Promise<JwksServer> {
  const state = { requests: 0, keys, status: 200, body: undefined as string | undefined };
  const server = createServer((_req, res) => {
    state.requests++;
    res.writeHead(state.status, { 'content-type': 'application/jwk-set+json' });
    res.end(state.body ?? JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

describe('verifier: JWKS', () => {
  let server: JwksServer;
  let bait: JwksServer;
  before(async () => {
    server = await startJwksServer([]);
    bait = await startJwksServer([]);
  });
  after(async () => {
    await server.close();
    await bait.close();
  });

  const jwksVerifier = (clock: FakeClock, options: Partial<VerifierOptions> = {}) =>
    createVerifier({
      issuer: ISS,
      audience: AUD,
      algorithms: ['RS256', 'ES256', 'EdDSA'],
      jwksUrl: server.url,
      clock,
      ...options,
    });

  it('loads the keys at start and verifies all three algorithms', async () => {
    server.keys = [RSA.jwk, EC.jwk, ED.jwk];
    server.requests = 0;
    const clock = new FakeClock();
    const verifier = jwksVerifier(clock);
    const token = signAsym('ES256', { kid: 'ec-1' }, claims(clock), EC.privateKey);
    assertRefused(verifier.verify(token), 'unknown_key');
    assert.equal(server.requests, 0, 'nothing is fetched before start()');
    await verifier.start();
    assert.equal(server.requests, 1);
    assert.equal(verifier.stats().keys, 3);
    assert.ok(verifier.verify(token).ok);
    assert.ok(verifier.verify(signAsym('RS256', { kid: 'rsa-1' }, claims(clock), RSA.privateKey)).ok);
    assert.ok(verifier.verify(signAsym('EdDSA', {}, claims(clock), ED.privateKey)).ok);
    await verifier.close();
    await verifier.close();
    assert.equal(clock.pendingTimers, 0, 'close stops the refresh timer');
  });

  it('refreshes periodically and drops cached tokens of a removed key', async () => {
    server.keys = [RSA.jwk];
    server.requests = 0;
    const clock = new FakeClock();
    const verifier = jwksVerifier(clock, { jwksRefreshMs: 60_000 });
    await verifier.start();
    const token = signAsym('RS256', { kid: 'rsa-1' }, claims(clock), RSA.privateKey);
    assert.ok(verifier.verify(token).ok);
    assert.equal(verifier.stats().cacheSize, 1);

    server.keys = [ED.jwk];
    await clock.advance(60_000);
    await waitFor(() => verifier.stats().keys === 1 && verifier.stats().cacheSize === 0, 'the refresh');
    assert.equal(server.requests, 2);
    assertRefused(verifier.verify(token), 'unknown_key');
    assert.ok(verifier.verify(signAsym('EdDSA', { kid: 'ed-1' }, claims(clock), ED.privateKey)).ok);

    // A failed refresh keeps the keys.
    server.status = 500;
    await clock.advance(60_000);
    await waitFor(() => server.requests === 3, 'the failing refresh');
    assert.ok(verifier.verify(signAsym('EdDSA', { kid: 'ed-1' }, claims(clock), ED.privateKey)).ok);
    server.status = 200;
    await verifier.close();
  });

  it('refreshes for an unknown kid at most once per 30 s', async () => {
    server.keys = [RSA.jwk];
    server.requests = 0;
    const clock = new FakeClock();
    const verifier = jwksVerifier(clock);
    await verifier.start();
    const rotated = keyPair('rsa', 'rsa-2');
    server.keys = [RSA.jwk, rotated.jwk];
    const token = signAsym('RS256', { kid: 'rsa-2' }, claims(clock), rotated.privateKey);

    // Just loaded: the cooldown holds.
    assertRefused(verifier.verify(token), 'unknown_key');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.requests, 1);

    await clock.advance(30_000);
    for (let i = 0; i < 50; i++) assertRefused(verifier.verify(token), 'unknown_key');
    await waitFor(() => verifier.verify(token).ok, 'the kid refresh');
    assert.equal(server.requests, 2, 'fifty unknown-kid failures, one refresh');

    // Random kids cannot flood the key server.
    for (let i = 0; i < 100; i++) {
      assertRefused(
        verifier.verify(signAsym('RS256', { kid: `random-${i}` }, claims(clock), RSA.privateKey)),
        'unknown_key',
      );
    }
    await clock.advance(29_000);
    assertRefused(
      verifier.verify(signAsym('RS256', { kid: 'random-x' }, claims(clock), RSA.privateKey)),
      'unknown_key',
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.requests, 2);
    await clock.advance(1000);
    assertRefused(
      verifier.verify(signAsym('RS256', { kid: 'random-y' }, claims(clock), RSA.privateKey)),
      'unknown_key',
    );
    await waitFor(() => server.requests === 3, 'the next allowed refresh');
    await verifier.close();
  });

  it('never fetches or trusts keys named by the token', async () => {
    server.keys = [RSA.jwk];
    const attacker = keyPair('rsa', 'evil');
    bait.keys = [attacker.jwk];
    bait.requests = 0;
    const clock = new FakeClock();
    const verifier = jwksVerifier(clock);
    await verifier.start();
    for (const header of [
      { jku: bait.url, kid: 'evil' },
      { x5u: bait.url },
      { jwk: attacker.jwk },
      { jwk: attacker.jwk, kid: 'rsa-1' },
      { kid: bait.url },
    ]) {
      const result = verifier.verify(signAsym('RS256', header, claims(clock), attacker.privateKey));
      assert.equal(result.ok, false, JSON.stringify(Object.keys(header)));
    }
    await clock.advance(60_000);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(bait.requests, 0);
    await verifier.close();
  });

  it('rejects start() when the first load fails, and skips unusable keys', async () => {
    const clock = new FakeClock();
    const failing = async (status: number, body: string | undefined, match: RegExp) => {
      server.status = status;
      server.body = body;
      const verifier = jwksVerifier(clock);
      await assert.rejects(
        verifier.start(),
        (err: unknown) => isCachecastError(err, 'JWT_JWKS_FAILED') && match.test(err.message),
      );
      await verifier.close();
    };
    try {
      await failing(500, undefined, /HTTP 500/);
      await failing(200, 'not json', /not JSON/);
      await failing(200, '{"nokeys":[]}', /"keys" array/);
      await failing(200, JSON.stringify({ keys: [{ kty: 'oct', k: b64(SECRET) }] }), /no usable key/);
      await failing(200, 'x'.repeat(600 * 1024), /larger than/);
    } finally {
      server.status = 200;
      server.body = undefined;
    }
    // An oct key next to a usable one is skipped, never used for HS256.
    server.keys = [{ kty: 'oct', k: b64(SECRET), kid: 'shared' }, RSA.jwk];
    const verifier = jwksVerifier(clock, { algorithms: ['RS256', 'HS256'], secret: OTHER_SECRET });
    await verifier.start();
    assert.equal(verifier.stats().keys, 2, 'the RSA key and the configured secret');
    assertRefused(verifier.verify(hs256({ alg: 'HS256', kid: 'shared' }, claims(clock))), 'bad_signature');
    await verifier.close();
    await assert.rejects(verifier.start(), (err: unknown) => isCachecastError(err, 'JWT_JWKS_FAILED'));
  });

  it('resolves start() at once without a JWKS', async () => {
    const verifier = hsVerifier(new FakeClock());
    await verifier.start();
    await verifier.close();
  });
});

describe('extractBearer', () => {
  it('reads exactly one bearer token', () => {
    const token = hs256({ alg: 'HS256' }, { sub: 'x' });
    for (const header of [`Bearer ${token}`, `bearer ${token}`, `BEARER   ${token}`, ` Bearer ${token}\t`]) {
      assert.deepEqual(extractBearer(header), { token }, header);
    }
    assert.deepEqual(extractBearer('Bearer abc-._~+/=='), { token: 'abc-._~+/==' });
  });

  it('tells a missing token from an invalid one', () => {
    for (const header of [undefined, '', '   ', '\t'])
      assert.deepEqual(extractBearer(header), { error: 'missing_token' });
    for (const header of [
      'Bearer',
      'Bearer ',
      'Bearer    ',
      'Bearerabc',
      'Bearer\tabc',
      'Basic dXNlcjpwYXNz',
      'Token abc',
      'Bearer a b',
      'Bearer abc, Bearer def',
      'Bearer a=b',
      'Bearer =abc',
      'Bearer abc\r\nx: y',
      'Bearer abç',
      'Bearer "abc"',
      'Bеarer abc', // Cyrillic е
      'xBearer abc',
    ]) {
      assert.deepEqual(extractBearer(header), { error: 'invalid_token' }, JSON.stringify(header));
    }
  });
});

describe('loadJwtConfig', () => {
  it('has a development default for every variable', () => {
    assert.deepEqual(loadJwtConfig({}), {
      secret: DEVELOPMENT_JWT_SECRET,
      secretIsDevelopment: true,
      issuer: 'cachecast',
      audience: 'cachecast',
      algorithms: ['HS256'],
      jwksUrl: undefined,
      clockSkewS: 30,
      accessTokenTtlS: 900,
    });
    assert.ok(Buffer.byteLength(DEVELOPMENT_JWT_SECRET) >= 32);
  });

  it('reads every variable', () => {
    const secret = 's'.repeat(40);
    assert.deepEqual(
      loadJwtConfig({
        JWT_SECRET: secret,
        JWT_ISSUER: ' auth ',
        JWT_AUDIENCE: 'api',
        JWT_ALGORITHMS: 'HS256, ES256,EdDSA,ES256',
        JWT_JWKS_URL: 'https://idp.example/jwks.json',
        JWT_CLOCK_SKEW_S: '0',
        ACCESS_TOKEN_TTL: '86400',
      }),
      {
        secret,
        secretIsDevelopment: false,
        issuer: 'auth',
        audience: 'api',
        algorithms: ['HS256', 'ES256', 'EdDSA'],
        jwksUrl: 'https://idp.example/jwks.json',
        clockSkewS: 0,
        accessTokenTtlS: 86_400,
      },
    );
  });

  it('names the bad variable and never echoes a secret', () => {
    const secretish = 'hunter2-hunter2';
    const refuses = (env: NodeJS.ProcessEnv, variable: string) =>
      assert.throws(
        () => loadJwtConfig(env),
        (err: unknown) =>
          isCachecastError(err, 'CONFIG_INVALID') &&
          err.message.includes(variable) &&
          !err.message.includes(secretish),
        JSON.stringify(env),
      );
    refuses({ JWT_SECRET: secretish }, 'JWT_SECRET');
    refuses({ JWT_SECRET: `${secretish}-${'x'.repeat(15)}` }, 'JWT_SECRET'); // 31 characters
    refuses({ JWT_ALGORITHMS: 'HS256,none' }, 'JWT_ALGORITHMS');
    refuses({ JWT_ALGORITHMS: 'HS256,,RS256', JWT_JWKS_URL: 'https://idp/jwks' }, 'JWT_ALGORITHMS');
    refuses({ JWT_ALGORITHMS: 'hs256' }, 'JWT_ALGORITHMS');
    refuses({ JWT_ALGORITHMS: 'RS256' }, 'JWT_JWKS_URL');
    refuses({ JWT_JWKS_URL: 'https://idp/jwks' }, 'JWT_JWKS_URL');
    refuses({ JWT_ALGORITHMS: 'RS256', JWT_JWKS_URL: `ftp://u:${secretish}@idp/jwks` }, 'JWT_JWKS_URL');
    refuses({ JWT_ALGORITHMS: 'RS256', JWT_JWKS_URL: 'http://idp.example/jwks' }, 'JWT_JWKS_URL');
    assert.equal(
      loadJwtConfig({ JWT_ALGORITHMS: 'RS256', JWT_JWKS_URL: 'http://127.0.0.1:8080/jwks' }).jwksUrl,
      'http://127.0.0.1:8080/jwks',
      'plain http only inside the machine',
    );
    refuses({ JWT_ALGORITHMS: 'RS256', JWT_JWKS_URL: `not a url ${secretish}` }, 'JWT_JWKS_URL');
    refuses({ JWT_CLOCK_SKEW_S: '301' }, 'JWT_CLOCK_SKEW_S');
    refuses({ JWT_CLOCK_SKEW_S: '-1' }, 'JWT_CLOCK_SKEW_S');
    refuses({ ACCESS_TOKEN_TTL: '0' }, 'ACCESS_TOKEN_TTL');
    refuses({ ACCESS_TOKEN_TTL: '86401' }, 'ACCESS_TOKEN_TTL');
    refuses({ ACCESS_TOKEN_TTL: '15m' }, 'ACCESS_TOKEN_TTL');
  });

  it('gives settings the issuer and verifier accept', () => {
    const config = loadJwtConfig({});
    const clock = new FakeClock();
    const issuer = createIssuer({ ...config, ttlS: config.accessTokenTtlS, clock });
    const verifier = createVerifier({ ...config, clock });
    assert.ok(verifier.verify(issuer.issue('user-1').token).ok);
  });
});
