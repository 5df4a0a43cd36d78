import type { IncomingHttpHeaders } from 'node:http';
import { extractBearer } from '../../auth/jwt/bearer.ts';
import type { TokenVerifier } from '../../auth/jwt/verifier.ts';

/**
 * Why a caller is not known: ext-authz's codes (CONTRACT.md), plus
 * `identity_mismatch` when a proxy's `x-user-id`/`x-auth-jti` names someone
 * other than the token does.
 */
export type CallerFailure = 'missing_token' | 'invalid_token' | 'token_expired' | 'identity_mismatch';

export type CallerResult = { ok: true; userId: string } | { ok: false; error: CallerFailure };

/**
 * Who is calling: the `sub` of the verified bearer token, never a header alone.
 * Behind ext-authz the request also carries the `x-user-id` and `x-auth-jti`
 * it set from the same token; when present they must agree with it, so a
 * proxy that forwards a client's own `x-user-id` cannot lend it weight.
 * Revocation is ext-authz's check, in front of this service.
 */
export function identifyCaller(headers: IncomingHttpHeaders, verifier: TokenVerifier): CallerResult {
  const bearer = extractBearer(headers.authorization);
  if ('error' in bearer) return { ok: false, error: bearer.error };
  const result = verifier.verify(bearer.token);
  if (!result.ok) return { ok: false, error: result.error };
  const { sub, jti } = result.claims;
  if (!agrees(headers['x-user-id'], sub) || !agrees(headers['x-auth-jti'], jti)) {
    return { ok: false, error: 'identity_mismatch' };
  }
  return { ok: true, userId: sub };
}

/** An absent header agrees; a present one (repeated ones arrive joined or as an array) must equal. */
function agrees(header: string | string[] | undefined, expected: string): boolean {
  return header === undefined || header === expected;
}
