// Building tokens byte for byte, for the tests that attack the verifier: any
// header and payload, given as objects or as raw JSON text.
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';

export const b64 = (value: string | Buffer): string =>
  (typeof value === 'string' ? Buffer.from(value) : value).toString('base64url');

/** A JWT segment: JSON text as given, anything else JSON-encoded. */
export const part = (value: unknown): string =>
  b64(typeof value === 'string' ? value : JSON.stringify(value));

/** HS256 over header and payload. */
export function signHs256(header: unknown, payload: unknown, secret: string | Buffer): string {
  const input = `${part(header)}.${part(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** RS256, ES256 (IEEE P1363 signature, as JWS wants) or EdDSA; `alg` goes first in the header. */
export function signAsym(
  alg: 'RS256' | 'ES256' | 'EdDSA',
  header: Record<string, unknown>,
  payload: unknown,
  key: KeyObject,
): string {
  const input = `${part({ alg, ...header })}.${part(payload)}`;
  const data = Buffer.from(input);
  const signature =
    alg === 'EdDSA'
      ? sign(null, data, key)
      : alg === 'ES256'
        ? sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' })
        : sign('sha256', data, key);
  return `${input}.${b64(signature)}`;
}

/** A key pair and its public JWK (with `kid` when given). */
export function keyPair(kind: 'rsa' | 'ec' | 'ed25519', kid?: string) {
  const { publicKey, privateKey } =
    kind === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : kind === 'ec'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  const jwk: JsonWebKey = { ...publicKey.export({ format: 'jwk' }), ...(kid ? { kid } : {}) };
  return { publicKey, privateKey, jwk };
}
