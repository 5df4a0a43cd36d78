import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { TEST_JWT_SECRET } from './authz-fleet.ts';
import { part, signHs256 } from './jwt-sign.ts';

/** Signs any header and claims with HMAC-SHA256: tests build exactly the token they need. */
export function hs256(
  claims: Record<string, unknown>,
  secret: string | Buffer = TEST_JWT_SECRET,
  header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' },
): string {
  return signHs256(header, claims, secret);
}

/** Valid claims for the test issuer, now; override any. */
export function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: 'cachecast',
    aud: 'cachecast',
    sub: 'user-1',
    jti: randomUUID(),
    iat: now,
    exp: now + 600,
    ...overrides,
  };
}

/** Every kind of bad token ext-authz must refuse with 401, and the code it must give. */
export function badTokens(): Array<{ name: string; token: string; error: string }> {
  const now = Math.floor(Date.now() / 1000);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const publicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
  const valid = hs256(claims());
  const [h, p] = valid.split('.');
  return [
    {
      name: 'forged signature',
      token: hs256(claims(), 'not-the-secret-not-the-secret-not-the-secret'),
      error: 'invalid_token',
    },
    { name: 'expired', token: hs256(claims({ iat: now - 1200, exp: now - 600 })), error: 'token_expired' },
    { name: 'not yet valid', token: hs256(claims({ nbf: now + 600 })), error: 'invalid_token' },
    { name: 'wrong issuer', token: hs256(claims({ iss: 'evil' })), error: 'invalid_token' },
    { name: 'wrong audience', token: hs256(claims({ aud: 'other' })), error: 'invalid_token' },
    { name: 'no jti', token: hs256(claims({ jti: undefined })), error: 'invalid_token' },
    { name: 'alg none', token: `${part({ alg: 'none', typ: 'JWT' })}.${p}.`, error: 'invalid_token' },
    {
      name: 'alg none with signature',
      token: `${part({ alg: 'none' })}.${p}.${valid.split('.')[2]}`,
      error: 'invalid_token',
    },
    {
      name: 'key confusion (HS256 keyed with an RSA public key)',
      token: hs256(claims(), String(publicPem)),
      error: 'invalid_token',
    },
    {
      name: 'RS256 header on an HMAC token',
      token: `${part({ alg: 'RS256' })}.${p}.${valid.split('.')[2]}`,
      error: 'invalid_token',
    },
    { name: 'oversized', token: hs256(claims({ pad: 'x'.repeat(9000) })), error: 'invalid_token' },
    { name: 'garbage', token: 'not.a.jwt', error: 'invalid_token' },
    { name: 'two segments', token: `${h}.${p}`, error: 'invalid_token' },
  ];
}
