import type { JsonWebKey, KeyObject } from 'node:crypto';
import { createPublicKey, createSecretKey } from 'node:crypto';
import { OptionRangeError, OptionTypeError } from '../../errors.ts';

export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256' | 'EdDSA';
export const JWT_ALGORITHMS: readonly JwtAlgorithm[] = ['HS256', 'RS256', 'ES256', 'EdDSA'];

/** RFC 7518 section 3.2: an HS256 key at least as long as the hash output. */
export const MIN_SECRET_BYTES = 32;
const MIN_RSA_BITS = 2048;

/** A public key bound to the one algorithm it may verify (RFC 8725 section 3.1). */
export interface VerificationKey {
  alg: Exclude<JwtAlgorithm, 'HS256'>;
  kid: string | undefined;
  key: KeyObject;
  /** Exact signature length in bytes: 64 for ES256 and EdDSA, the modulus length for RS256. */
  signatureBytes: number;
  /** The public members, to notice when a refreshed key set differs. */
  fingerprint: string;
}

/** The HS256 key object, created once so that each verification skips key setup. */
export function createHmacKey(secret: unknown, name: string): KeyObject {
  let bytes: Buffer;
  if (typeof secret === 'string') bytes = Buffer.from(secret, 'utf8');
  else if (secret instanceof Uint8Array) bytes = Buffer.from(secret);
  else throw new OptionTypeError(`${name} must be a string or a Uint8Array`);
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new OptionRangeError(`${name} must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  return createSecretKey(bytes);
}

function optionalString(jwk: Record<string, unknown>, member: string): string | undefined {
  const value = jwk[member];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new TypeError(`JWK "${member}" must be a string`);
  return value;
}

function requiredString(jwk: Record<string, unknown>, member: string): string {
  const value = optionalString(jwk, member);
  if (!value) throw new TypeError(`JWK "${member}" is missing`);
  return value;
}

/**
 * Imports a public JWK and binds it to its algorithm from kty/crv alone: RSA
 * (at least 2048 bits) -> RS256, EC P-256 -> ES256, OKP Ed25519 -> EdDSA.
 * Symmetric ("oct") keys and other curves are refused, and so are keys whose
 * `alg`, `use` or `key_ops` say they are not for that algorithm's signatures.
 * Only the public members are read, so a private JWK never becomes a private key here.
 * Throws TypeError or RangeError saying why.
 */
export function importPublicJwk(jwk: unknown): VerificationKey {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) {
    throw new TypeError('a JWK must be an object');
  }
  const members = jwk as Record<string, unknown>;
  const kty = requiredString(members, 'kty');
  const kid = optionalString(members, 'kid');
  const declaredAlg = optionalString(members, 'alg');
  const use = optionalString(members, 'use');
  if (use !== undefined && use !== 'sig') throw new RangeError(`JWK use "${use}" is not "sig"`);
  const keyOps = members.key_ops;
  if (keyOps !== undefined && !(Array.isArray(keyOps) && keyOps.includes('verify'))) {
    throw new RangeError('JWK key_ops does not include "verify"');
  }

  let alg: VerificationKey['alg'];
  let publicJwk: JsonWebKey;
  if (kty === 'RSA') {
    alg = 'RS256';
    publicJwk = { kty, n: requiredString(members, 'n'), e: requiredString(members, 'e') };
  } else if (kty === 'EC') {
    const crv = requiredString(members, 'crv');
    if (crv !== 'P-256') throw new RangeError(`EC curve ${crv} is not supported (only P-256, for ES256)`);
    alg = 'ES256';
    publicJwk = { kty, crv, x: requiredString(members, 'x'), y: requiredString(members, 'y') };
  } else if (kty === 'OKP') {
    const crv = requiredString(members, 'crv');
    if (crv !== 'Ed25519') throw new RangeError(`OKP curve ${crv} is not supported (only Ed25519)`);
    alg = 'EdDSA';
    publicJwk = { kty, crv, x: requiredString(members, 'x') };
  } else {
    // "oct" in particular: a shared secret published as a verification key is the key-confusion attack.
    throw new RangeError(`JWK kty "${kty}" is not supported (RSA, EC or OKP)`);
  }
  // RFC 9864 names Ed25519 as a fully specified alternative to EdDSA.
  if (declaredAlg !== undefined && declaredAlg !== alg && !(alg === 'EdDSA' && declaredAlg === 'Ed25519')) {
    throw new RangeError(`JWK alg "${declaredAlg}" does not match its key type (${alg})`);
  }

  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicJwk, format: 'jwk' });
  } catch (err) {
    throw new TypeError(`JWK is not a valid ${kty} public key`, { cause: err });
  }
  let signatureBytes = 64;
  if (alg === 'RS256') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new RangeError(`RSA key has ${bits} bits, fewer than ${MIN_RSA_BITS}`);
    signatureBytes = Math.ceil(bits / 8);
  }
  return { alg, kid, key, signatureBytes, fingerprint: JSON.stringify([alg, kid ?? null, publicJwk]) };
}

/** The keys of a JWK Set document that this verifier can use, and why the others were skipped. */
export function parseJwks(
  document: unknown,
  algorithms: readonly JwtAlgorithm[],
  maxKeys: number,
): { keys: VerificationKey[]; skipped: string[] } {
  if (
    typeof document !== 'object' ||
    document === null ||
    !Array.isArray((document as { keys?: unknown }).keys)
  ) {
    throw new TypeError('the JWKS is not an object with a "keys" array');
  }
  const entries = (document as { keys: unknown[] }).keys;
  if (entries.length > maxKeys)
    throw new RangeError(`the JWKS holds ${entries.length} keys, more than ${maxKeys}`);
  const keys: VerificationKey[] = [];
  const skipped: string[] = [];
  for (const [i, entry] of entries.entries()) {
    try {
      const key = importPublicJwk(entry);
      if (algorithms.includes(key.alg)) keys.push(key);
      else skipped.push(`keys[${i}]: ${key.alg} is not allowed`);
    } catch (err) {
      // A JWKS may list keys for other algorithms or uses; they are not ours to verify with.
      skipped.push(`keys[${i}]: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return { keys, skipped };
}
