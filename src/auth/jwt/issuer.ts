import { createHmac, randomUUID } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import { numberOption, objectOption, stringOption } from '../../options.ts';
import { encodeBase64url } from './base64url.ts';
import { isClaimId, MAX_ID_LENGTH } from './claims.ts';
import { createHmacKey } from './keys.ts';

export interface IssuerOptions {
  /** HS256 key, at least 32 bytes: the verifier's `secret`. */
  secret: string | Uint8Array;
  /** `iss` of every token. */
  issuer: string;
  /** `aud` of every token. */
  audience: string;
  /** Token lifetime in seconds, 1 to 86400 (ACCESS_TOKEN_TTL). */
  ttlS: number;
  /** @default the system clock */
  clock?: Clock;
}

interface ResolvedIssuerOptions {
  key: KeyObject;
  issuer: string;
  audience: string;
  ttlS: number;
  clock: Clock;
}

export interface IssuedToken {
  token: string;
  jti: string;
  /** Unix seconds: the token's `exp`. */
  expiresAt: number;
  /** Seconds from now until expiresAt (the OAuth `expires_in`). */
  expiresIn: number;
}

export interface TokenIssuer {
  /** Throws TypeError when `sub` is not 1-256 visible ASCII characters. */
  issue(sub: string): IssuedToken;
}

const MAX_TTL_S = 86_400;
const HEADER = encodeBase64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

export function normalizeIssuerOptions(options: IssuerOptions): ResolvedIssuerOptions {
  objectOption('options', options);
  const issuer = stringOption('issuer', options.issuer);
  const audience = stringOption('audience', options.audience);
  const ttlS = numberOption('ttlS', options.ttlS, undefined, { min: 1, max: MAX_TTL_S, integer: true });
  return {
    key: createHmacKey(options.secret, 'secret'),
    issuer,
    audience,
    ttlS,
    clock: options.clock ?? systemClock,
  };
}

/** Issues HS256 access tokens with iss, aud, sub, jti (a random UUID), iat and exp. */
export function createIssuer(options: IssuerOptions): TokenIssuer {
  const o = normalizeIssuerOptions(options);
  return {
    issue(sub: string): IssuedToken {
      // The verifier refuses anything else, so issuing it would only mint unusable tokens.
      if (!isClaimId(sub)) {
        throw new TypeError(`sub must be 1 to ${MAX_ID_LENGTH} visible ASCII characters`);
      }
      const jti = randomUUID();
      const iat = Math.floor(o.clock.now() / 1000);
      const exp = iat + o.ttlS;
      const payload = encodeBase64url(JSON.stringify({ iss: o.issuer, aud: o.audience, sub, jti, iat, exp }));
      const signingInput = `${HEADER}.${payload}`;
      const signature = createHmac('sha256', o.key).update(signingInput).digest('base64url');
      return { token: `${signingInput}.${signature}`, jti, expiresAt: exp, expiresIn: o.ttlS };
    },
  };
}
