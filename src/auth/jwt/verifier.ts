import type { KeyObject } from 'node:crypto';
import { createHmac, timingSafeEqual, verify as verifySignature } from 'node:crypto';
import { describeError } from '../../errors.ts';
import { isUtf8 } from 'node:buffer';
import { decodeBase64urlStrict } from './base64url.ts';
import { checkClaims, checkTimes } from './claims.ts';
import type { TokenTimes } from './claims.ts';
import { JwksClient } from './jwks.ts';
import type { VerificationKey } from './keys.ts';
import type { JwtAlgorithm, ResolvedVerifierOptions, VerifierOptions } from './options.ts';
import { normalizeVerifierOptions } from './options.ts';

export type { JwtAlgorithm, VerifierOptions } from './options.ts';
export { extractBearer } from './bearer.ts';
export type { BearerResult } from './bearer.ts';

export type TokenFailure = 'invalid_token' | 'token_expired';

/** Why a token was refused, for metrics and logs (never sent to clients: they get TokenFailure). */
export const VERIFY_REASONS = [
  'too_large',
  'malformed',
  'alg_not_allowed',
  'unknown_key',
  'bad_signature',
  'missing_claim',
  'invalid_claim',
  'wrong_issuer',
  'wrong_audience',
  'not_yet_valid',
  'issued_in_future',
  'expired',
] as const;
export type VerifyReason = (typeof VERIFY_REASONS)[number];

export interface VerifiedClaims {
  sub: string;
  jti: string;
  exp: number;
  iat: number;
  iss: string;
  aud: string | string[];
  nbf?: number;
  readonly [claim: string]: unknown;
}

export type VerifyResult =
  { ok: true; claims: VerifiedClaims } | { ok: false; error: TokenFailure; reason: VerifyReason };

export interface TokenVerifier {
  /** Synchronous and never throws: any input gives a VerifyResult. */
  verify(token: string): VerifyResult;
  /** Loads the JWKS when configured (rejects if the first load fails). Resolves at once otherwise. */
  start(): Promise<void>;
  /** Stops the JWKS refresh; idempotent. verify() keeps working with the keys it has. */
  close(): Promise<void>;
  /** `keys`: verification keys in use, the HS256 secret counting as one. */
  stats(): { cacheSize: number; cacheHits: number; cacheMisses: number; keys: number };
}

type Failure = Extract<VerifyResult, { ok: false }>;

// One frozen result per reason: refusing a token allocates nothing.
const FAILURES = Object.fromEntries(
  VERIFY_REASONS.map((reason) => [
    reason,
    Object.freeze({ ok: false, error: reason === 'expired' ? 'token_expired' : 'invalid_token', reason }),
  ]),
) as Record<VerifyReason, Failure>;

/** The header members that matter, kept per distinct header segment. */
interface ParsedHeader {
  alg: JwtAlgorithm;
  kid: string | undefined;
}

interface CachedToken {
  result: { ok: true; claims: VerifiedClaims };
  times: TokenTimes;
}

// A service sees a handful of distinct headers (one per key and algorithm); the
// bound only stops unsigned junk headers from growing the map.
const HEADER_CACHE_SIZE = 64;

/** `typ` values accepted when present (RFC 7519 section 5.1, RFC 9068 access tokens), compared lowercased. */
const ACCEPTED_TYPES = new Set(['jwt', 'application/jwt', 'at+jwt', 'application/at+jwt']);

/**
 * A JWT verifier hardened per RFC 8725: algorithms come from an allowlist,
 * every key is bound to one algorithm (the secret to HS256, public keys to the
 * algorithm of their kty/crv), header fields never fetch anything, and the
 * claims exp, iat, sub, jti, iss and aud are required.
 *
 * Header: `crit` is refused (no extension is understood); `typ`, when present,
 * must be JWT or at+jwt (optionally with "application/"), so that a token of
 * another kind signed by the same key is not taken for an access token;
 * `kid` only picks among configured keys; jku, x5u, jwk and x5c are ignored.
 * JSON with duplicate members keeps the last one (JSON.parse).
 *
 * Verified tokens are cached by their exact string. The cache evicts the
 * oldest insertion first (FIFO): tokens live minutes and arrive roughly in
 * issue order, so the oldest entry is about the nearest to expiry, and a hit
 * costs one Map lookup with no reordering. Every hit re-checks the clock.
 */
class Verifier implements TokenVerifier {
  readonly #o: ResolvedVerifierOptions;
  readonly #allowed: ReadonlySet<string>;
  readonly #headers = new Map<string, ParsedHeader>();
  readonly #cache = new Map<string, CachedToken>();
  readonly #jwks: JwksClient | undefined;
  // alg -> keys, and alg -> kid -> keys; rebuilt whenever the JWKS changes.
  #byAlg = new Map<JwtAlgorithm, VerificationKey[]>();
  #byKid = new Map<JwtAlgorithm, Map<string, VerificationKey[]>>();
  #jwksKeys: readonly VerificationKey[] = [];
  #keyCount = 0;
  #hits = 0;
  #misses = 0;

  constructor(options: ResolvedVerifierOptions) {
    this.#o = options;
    this.#allowed = new Set(options.algorithms);
    this.#indexKeys();
    if (options.jwksUrl !== undefined) {
      this.#jwks = new JwksClient({
        url: options.jwksUrl,
        fetch: options.fetch,
        clock: options.clock,
        logger: options.logger,
        algorithms: options.algorithms,
        refreshMs: options.jwksRefreshMs,
        onKeys: (keys) => this.#setJwksKeys(keys),
      });
    }
  }

  verify(token: string): VerifyResult {
    try {
      return this.#verify(token);
    } catch (err) {
      // Not reached by any known input; the promise is that verify never throws.
      this.#o.logger.debug({ err: describeError(err) }, 'token verification threw');
      return FAILURES.malformed;
    }
  }

  start(): Promise<void> {
    return this.#jwks ? this.#jwks.start() : Promise.resolve();
  }

  async close(): Promise<void> {
    await this.#jwks?.close();
  }

  stats(): { cacheSize: number; cacheHits: number; cacheMisses: number; keys: number } {
    return {
      cacheSize: this.#cache.size,
      cacheHits: this.#hits,
      cacheMisses: this.#misses,
      keys: this.#keyCount,
    };
  }

  #verify(token: string): VerifyResult {
    if (typeof token !== 'string') return FAILURES.malformed;
    // UTF-16 length <= UTF-8 length, so this never lets an oversized token through;
    // a shorter one with non-ASCII characters fails the base64url check below.
    if (token.length > this.#o.maxTokenBytes) return FAILURES.too_large;

    const cacheOn = this.#o.cacheSize > 0;
    if (cacheOn) {
      const cached = this.#cache.get(token);
      if (cached !== undefined) {
        this.#hits++;
        const problem = checkTimes(cached.times, this.#o.clock.now() / 1000, this.#o.clockSkewS);
        if (problem === undefined) return cached.result;
        // An expired token never becomes valid again.
        if (problem === 'expired') this.#cache.delete(token);
        return FAILURES[problem];
      }
      this.#misses++;
    }

    const dot1 = token.indexOf('.');
    const dot2 = dot1 < 0 ? -1 : token.indexOf('.', dot1 + 1);
    if (dot2 < 0 || token.indexOf('.', dot2 + 1) >= 0) return FAILURES.malformed;

    const header = this.#header(token.slice(0, dot1));
    if (typeof header === 'string') return FAILURES[header];
    const payloadBytes = decodeBase64urlStrict(token.slice(dot1 + 1, dot2));
    const signature = decodeBase64urlStrict(token.slice(dot2 + 1));
    if (payloadBytes === undefined || signature === undefined) return FAILURES.malformed;

    const signingInput = token.slice(0, dot2);
    const signatureProblem =
      header.alg === 'HS256'
        ? this.#checkHmac(signingInput, signature)
        : this.#checkPublicKey(header, signingInput, signature);
    if (signatureProblem !== undefined) return FAILURES[signatureProblem];

    const payload = parseObject(payloadBytes);
    if (payload === undefined) return FAILURES.malformed;
    const times = checkClaims(payload, this.#o.issuer, this.#o.audience);
    if (typeof times === 'string') return FAILURES[times];
    const timeProblem = checkTimes(times, this.#o.clock.now() / 1000, this.#o.clockSkewS);
    if (timeProblem !== undefined) return FAILURES[timeProblem];

    // Frozen: the same claims object is handed to every caller of a cached token.
    const result = { ok: true as const, claims: deepFreeze(payload) as VerifiedClaims };
    if (cacheOn) {
      if (this.#cache.size >= this.#o.cacheSize) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(token, { result, times });
    }
    return result;
  }

  /** Parses and checks a header segment, remembering the ones that passed. */
  #header(segment: string): ParsedHeader | 'malformed' | 'alg_not_allowed' {
    const known = this.#headers.get(segment);
    if (known !== undefined) return known;
    const bytes = decodeBase64urlStrict(segment);
    const header = bytes === undefined ? undefined : parseObject(bytes);
    if (header === undefined || Object.hasOwn(header, 'crit')) return 'malformed';
    const alg = Object.hasOwn(header, 'alg') ? header.alg : undefined;
    if (typeof alg !== 'string') return 'malformed';
    // "none", lowercase spellings and anything unknown: only the allowlist counts.
    if (!this.#allowed.has(alg)) return 'alg_not_allowed';
    const typ = Object.hasOwn(header, 'typ') ? header.typ : undefined;
    if (typ !== undefined && (typeof typ !== 'string' || !ACCEPTED_TYPES.has(typ.toLowerCase()))) {
      return 'malformed';
    }
    const kid = Object.hasOwn(header, 'kid') ? header.kid : undefined;
    if (kid !== undefined && typeof kid !== 'string') return 'malformed';
    const parsed: ParsedHeader = { alg: alg as JwtAlgorithm, kid };
    if (this.#headers.size >= HEADER_CACHE_SIZE) this.#headers.clear();
    this.#headers.set(segment, parsed);
    return parsed;
  }

  #checkHmac(signingInput: string, signature: Buffer): 'bad_signature' | undefined {
    // HS256 only ever uses the configured secret, whatever the header's kid says.
    const key = this.#o.hmacKey as KeyObject;
    if (signature.length !== 32) return 'bad_signature';
    const expected = createHmac('sha256', key).update(signingInput).digest();
    return timingSafeEqual(expected, signature) ? undefined : 'bad_signature';
  }

  #checkPublicKey(
    header: ParsedHeader,
    signingInput: string,
    signature: Buffer,
  ): 'bad_signature' | 'unknown_key' | undefined {
    const alg = header.alg;
    const candidates =
      header.kid === undefined ? this.#byAlg.get(alg) : this.#byKid.get(alg)?.get(header.kid);
    if (candidates === undefined || candidates.length === 0) {
      this.#jwks?.requestRefresh();
      return 'unknown_key';
    }
    const data = Buffer.from(signingInput, 'latin1');
    for (const candidate of candidates) {
      if (signature.length !== candidate.signatureBytes) continue;
      if (verifyWith(candidate, data, signature)) return undefined;
    }
    return 'bad_signature';
  }

  #setJwksKeys(keys: VerificationKey[]): void {
    const before = fingerprint(this.#jwksKeys);
    this.#jwksKeys = keys;
    const after = fingerprint(keys);
    if (before === after) return;
    this.#indexKeys();
    // Tokens verified with a key that is gone must not outlive it in the cache.
    this.#cache.clear();
    this.#o.logger.info({ keys: keys.length }, 'JWKS keys loaded');
  }

  #indexKeys(): void {
    const byAlg = new Map<JwtAlgorithm, VerificationKey[]>();
    const byKid = new Map<JwtAlgorithm, Map<string, VerificationKey[]>>();
    for (const key of [...this.#o.staticKeys, ...this.#jwksKeys]) {
      let list = byAlg.get(key.alg);
      if (!list) byAlg.set(key.alg, (list = []));
      list.push(key);
      if (key.kid === undefined) continue;
      let kids = byKid.get(key.alg);
      if (!kids) byKid.set(key.alg, (kids = new Map<string, VerificationKey[]>()));
      let same = kids.get(key.kid);
      if (!same) kids.set(key.kid, (same = []));
      same.push(key);
    }
    this.#byAlg = byAlg;
    this.#byKid = byKid;
    this.#keyCount = this.#o.staticKeys.length + this.#jwksKeys.length + (this.#o.hmacKey ? 1 : 0);
  }
}

function verifyWith(candidate: VerificationKey, data: Buffer, signature: Buffer): boolean {
  try {
    if (candidate.alg === 'EdDSA') return verifySignature(null, data, candidate.key, signature);
    if (candidate.alg === 'ES256') {
      // JOSE carries ECDSA signatures as raw r || s, not DER.
      return verifySignature('sha256', data, { key: candidate.key, dsaEncoding: 'ieee-p1363' }, signature);
    }
    return verifySignature('sha256', data, candidate.key, signature);
  } catch {
    return false;
  }
}

function fingerprint(keys: readonly VerificationKey[]): string {
  return keys
    .map((k) => k.fingerprint)
    .sort()
    .join('\n');
}

/** JSON text -> a plain object, or undefined for invalid UTF-8, invalid JSON or a non-object. */
function parseObject(bytes: Buffer): Record<string, unknown> | undefined {
  // Bytes that are not UTF-8 are refused, not silently replaced.
  if (!isUtf8(bytes)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  return value as Record<string, unknown>;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
}

export function createVerifier(options: VerifierOptions): TokenVerifier {
  return new Verifier(normalizeVerifierOptions(options));
}
