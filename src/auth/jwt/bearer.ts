/** The `www-authenticate` value of every token refusal (RFC 6750 section 3), on every transport. */
export const INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"';

export type BearerResult = { token: string } | { error: 'missing_token' | 'invalid_token' };

const MISSING: BearerResult = Object.freeze({ error: 'missing_token' });
const INVALID: BearerResult = Object.freeze({ error: 'invalid_token' });

// RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then any "=".
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const SCHEME = 'bearer';
const SPACE = 0x20;
const TAB = 0x09;

/**
 * Reads `Authorization: Bearer <token>` (RFC 6750 section 2.1): the scheme in
 * any case, one or more spaces, then exactly one b64token. A missing or blank
 * header is missing_token; anything else that is not that shape (another
 * scheme, no token, two tokens, stray characters) is invalid_token.
 */
export function extractBearer(header: string | undefined): BearerResult {
  if (typeof header !== 'string') return MISSING;
  let start = 0;
  let end = header.length;
  // HTTP strips surrounding whitespace from field values; callers may not have.
  while (start < end && isOws(header.charCodeAt(start))) start++;
  while (end > start && isOws(header.charCodeAt(end - 1))) end--;
  if (start === end) return MISSING;
  if (end - start < SCHEME.length + 2) return INVALID;
  for (let i = 0; i < SCHEME.length; i++) {
    // | 0x20 lowercases an ASCII letter and maps no other character onto one.
    if ((header.charCodeAt(start + i) | 0x20) !== SCHEME.charCodeAt(i)) return INVALID;
  }
  let i = start + SCHEME.length;
  if (header.charCodeAt(i) !== SPACE) return INVALID;
  while (header.charCodeAt(i) === SPACE) i++;
  const token = header.slice(i, end);
  // A regular expression here: irregexp runs this class scan about twice as fast as a
  // charCodeAt loop, and a single character class with an anchored tail cannot backtrack.
  return B64TOKEN.test(token) ? { token } : INVALID;
}

function isOws(code: number): boolean {
  return code === SPACE || code === TAB;
}
