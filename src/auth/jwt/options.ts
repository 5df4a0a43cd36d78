import type { JsonWebKey, KeyObject } from 'node:crypto';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { MAX_TIMER_MS, numberOption, objectOption, stringOption } from '../../options.ts';
import { OptionRangeError, OptionTypeError } from '../../errors.ts';
import type { JwtAlgorithm, VerificationKey } from './keys.ts';
import { createHmacKey, importPublicJwk, JWT_ALGORITHMS } from './keys.ts';

export type { JwtAlgorithm } from './keys.ts';
export { JWT_ALGORITHMS } from './keys.ts';

export interface VerifierOptions {
  /** Required `iss`: tokens must carry exactly this string. */
  issuer: string;
  /** Required `aud`: the token's string, or one entry of its array, must equal this. */
  audience: string;
  /**
   * The only algorithms accepted; the header's `alg` just picks among them.
   * @default ['HS256']
   */
  algorithms?: JwtAlgorithm[];
  /** HS256 key, at least 32 bytes (required when HS256 is allowed; ignored otherwise). */
  secret?: string | Uint8Array;
  /** Static public keys as JWKs (RS256: RSA >= 2048 bits; ES256: EC P-256; EdDSA: OKP Ed25519). */
  publicKeys?: JsonWebKey[];
  /**
   * JWKS URL (http or https): loaded by start(), refreshed every jwksRefreshMs, and at
   * most once per 30 s when a token names an unknown `kid`. Never derived from the token.
   */
  jwksUrl?: string;
  /** @default 600000 */
  jwksRefreshMs?: number;
  /** Tolerance in seconds for exp, nbf and iat between clocks, 0 to 300. @default 30 */
  clockSkewS?: number;
  /** Longer tokens are refused before any decoding. @default 8192 */
  maxTokenBytes?: number;
  /** Verified-token cache entries; 0 disables. @default 10000 */
  cacheSize?: number;
  /** @default the system clock */
  clock?: Clock;
  /** Used for the JWKS only. @default globalThis.fetch */
  fetch?: typeof fetch;
  /** @default a silent logger */
  logger?: Logger;
}

export interface ResolvedVerifierOptions {
  issuer: string;
  audience: string;
  algorithms: readonly JwtAlgorithm[];
  hmacKey: KeyObject | undefined;
  staticKeys: readonly VerificationKey[];
  jwksUrl: string | undefined;
  jwksRefreshMs: number;
  clockSkewS: number;
  maxTokenBytes: number;
  cacheSize: number;
  clock: Clock;
  fetch: typeof fetch;
  logger: Logger;
}

const integer = (name: string, value: unknown, fallback: number, min: number, max: number): number =>
  numberOption(name, value, fallback, { min, max, integer: true });

/** Merges defaults and checks every option, throwing OptionTypeError or OptionRangeError (a TypeError or RangeError with a code) at construction. */
export function normalizeVerifierOptions(options: VerifierOptions): ResolvedVerifierOptions {
  objectOption('options', options);
  const issuer = stringOption('issuer', options.issuer);
  const audience = stringOption('audience', options.audience);

  const requested = options.algorithms ?? ['HS256'];
  if (!Array.isArray(requested) || requested.length === 0) {
    throw new OptionTypeError('algorithms must be a non-empty array');
  }
  for (const alg of requested) {
    if (!JWT_ALGORITHMS.includes(alg)) {
      throw new OptionRangeError(`algorithms: ${String(alg)} is not one of ${JWT_ALGORITHMS.join(', ')}`);
    }
  }
  const algorithms = Object.freeze([...new Set(requested)]);

  let hmacKey: KeyObject | undefined;
  if (algorithms.includes('HS256')) {
    if (options.secret === undefined) throw new OptionTypeError('secret is required when HS256 is allowed');
    hmacKey = createHmacKey(options.secret, 'secret');
  }

  const staticKeys: VerificationKey[] = [];
  for (const [i, jwk] of (options.publicKeys ?? []).entries()) {
    let key: VerificationKey;
    try {
      key = importPublicJwk(jwk);
    } catch (err) {
      const message = `publicKeys[${i}]: ${(err as Error).message}`;
      throw err instanceof RangeError ? new OptionRangeError(message) : new OptionTypeError(message);
    }
    if (!algorithms.includes(key.alg)) {
      throw new OptionRangeError(
        `publicKeys[${i}] is an ${key.alg} key, but ${key.alg} is not in algorithms`,
      );
    }
    staticKeys.push(key);
  }

  let jwksUrl: string | undefined;
  if (options.jwksUrl !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(options.jwksUrl);
    } catch {
      throw new OptionTypeError('jwksUrl is not a URL');
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
      throw new OptionTypeError(`jwksUrl must use http: or https:, got ${parsed.protocol}`);
    }
    jwksUrl = parsed.href;
  }

  for (const alg of algorithms) {
    if (alg !== 'HS256' && jwksUrl === undefined && !staticKeys.some((k) => k.alg === alg)) {
      throw new OptionTypeError(`${alg} is allowed but neither publicKeys nor jwksUrl provides a key for it`);
    }
  }

  const fetchFn = options.fetch ?? globalThis.fetch;
  if (jwksUrl !== undefined && typeof fetchFn !== 'function')
    throw new OptionTypeError('fetch must be a function');

  return {
    issuer,
    audience,
    algorithms,
    hmacKey,
    staticKeys,
    jwksUrl,
    jwksRefreshMs: integer('jwksRefreshMs', options.jwksRefreshMs, 600_000, 1000, MAX_TIMER_MS),
    clockSkewS: integer('clockSkewS', options.clockSkewS, 30, 0, 300),
    maxTokenBytes: integer('maxTokenBytes', options.maxTokenBytes, 8192, 16, 1024 * 1024),
    cacheSize: integer('cacheSize', options.cacheSize, 10_000, 0, 10_000_000),
    clock: options.clock ?? systemClock,
    fetch: fetchFn,
    logger: (options.logger ?? silentLogger).child({ component: 'jwt' }),
  };
}
