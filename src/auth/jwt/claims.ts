/**
 * Claim rules shared by the verifier and the issuer. `sub` and `jti` leave
 * the verifier as HTTP header values (x-user-id, x-auth-jti) and as the
 * revocation key, so they are bounded and limited to visible ASCII: a CR/LF or
 * a non-Latin-1 character there would break or inject a header downstream.
 */

export const MAX_ID_LENGTH = 256;

export type ClaimProblem = 'missing_claim' | 'invalid_claim' | 'wrong_issuer' | 'wrong_audience';
export type TimeProblem = 'not_yet_valid' | 'issued_in_future' | 'expired';

/** A non-empty string of at most 256 visible ASCII characters (0x21-0x7e). */
export function isClaimId(value: unknown): value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ID_LENGTH) return false;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x21 || code > 0x7e) return false;
  }
  return true;
}

/** A NumericDate (RFC 7519): seconds since the epoch, fractions allowed. */
function isNumericDate(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** Only own properties count: a polluted Object.prototype must not supply a claim. */
function own(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** The time claims of a token whose other claims passed, kept with cached tokens. */
export interface TokenTimes {
  exp: number;
  iat: number;
  nbf: number | undefined;
}

/**
 * Checks the required claims' presence and shape, then issuer and audience.
 * Returns the problem, or the time claims for checkTimes.
 */
export function checkClaims(
  payload: Record<string, unknown>,
  issuer: string,
  audience: string,
): ClaimProblem | TokenTimes {
  const sub = own(payload, 'sub');
  const jti = own(payload, 'jti');
  const exp = own(payload, 'exp');
  const iat = own(payload, 'iat');
  const iss = own(payload, 'iss');
  const aud = own(payload, 'aud');
  const nbf = own(payload, 'nbf');
  if (
    sub === undefined ||
    jti === undefined ||
    exp === undefined ||
    iat === undefined ||
    iss === undefined ||
    aud === undefined
  ) {
    return 'missing_claim';
  }
  if (
    !isClaimId(sub) ||
    !isClaimId(jti) ||
    !isNumericDate(exp) ||
    !isNumericDate(iat) ||
    (nbf !== undefined && !isNumericDate(nbf)) ||
    typeof iss !== 'string'
  ) {
    return 'invalid_claim';
  }
  if (iss !== issuer) return 'wrong_issuer';
  if (typeof aud === 'string') {
    if (aud !== audience) return 'wrong_audience';
  } else if (Array.isArray(aud)) {
    let found = false;
    for (const entry of aud as unknown[]) {
      // Every entry must be a string (RFC 7519 section 4.1.3), not just the matching one.
      if (typeof entry !== 'string') return 'invalid_claim';
      if (entry === audience) found = true;
    }
    if (!found) return 'wrong_audience';
  } else {
    return 'invalid_claim';
  }
  return { exp, iat, nbf };
}

/**
 * The clock-dependent checks, run on every verification including cache
 * hits. `skewS` tolerates clocks that disagree by that much in either direction.
 */
export function checkTimes(times: TokenTimes, nowS: number, skewS: number): TimeProblem | undefined {
  if (times.iat > nowS + skewS) return 'issued_in_future';
  if (times.nbf !== undefined && times.nbf > nowS + skewS) return 'not_yet_valid';
  if (times.exp + skewS <= nowS) return 'expired';
  return undefined;
}
