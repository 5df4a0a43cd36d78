import { performance } from 'node:perf_hooks';
import type { Histogram } from 'prom-client';
import type { TokenVerifier } from '../../auth/jwt/verifier.ts';
import { extractBearer } from '../../auth/jwt/verifier.ts';
import type { AuthzDecision, DecisionLog } from './decision.ts';
import { decisionLabel } from './decision.ts';
import type { RevocationList, RevocationStatus } from './revocation-check.ts';

/** What to do when neither the replica nor Redis can tell whether a token was revoked. */
export type UnknownRevocationPolicy = 'refuse' | 'allow';

export interface AuthorizerOptions {
  verifier: TokenVerifier;
  revocations: RevocationList;
  /** @default 'refuse' */
  unknownRevocation?: UnknownRevocationPolicy;
  log: DecisionLog;
  /** Check latency, seconds, labelled by transport. */
  latency?: Histogram<'via'>;
}

export type Transport = 'http' | 'grpc';

/**
 * The decision both transports share: token syntax and signature (cached),
 * claims, then the revocation check on every request.
 */
export class Authorizer {
  readonly #verifier: TokenVerifier;
  readonly #revocations: RevocationList;
  readonly #allowUnknown: boolean;
  readonly #log: DecisionLog;
  readonly #latency: Histogram<'via'> | undefined;

  constructor(options: AuthorizerOptions) {
    this.#verifier = options.verifier;
    this.#revocations = options.revocations;
    this.#allowUnknown = (options.unknownRevocation ?? 'refuse') === 'allow';
    this.#log = options.log;
    this.#latency = options.latency;
  }

  /** Synchronous unless Redis must be asked (redis mode, or a degraded replica). */
  check(authorization: string | undefined, via: Transport): AuthzDecision | Promise<AuthzDecision> {
    const started = performance.now();
    const bearer = extractBearer(authorization);
    if ('error' in bearer) return this.#done({ allow: false, reason: bearer.error }, via, started);
    const result = this.#verifier.verify(bearer.token);
    if (!result.ok) return this.#done({ allow: false, reason: result.error }, via, started);
    const { sub, jti } = result.claims;
    const status = this.#revocations.status(jti);
    if (typeof status === 'string') return this.#done(this.#decide(status, sub, jti), via, started);
    return status.then((s) => this.#done(this.#decide(s, sub, jti), via, started));
  }

  #decide(status: RevocationStatus, sub: string, jti: string): AuthzDecision {
    if (status === 'ok') return { allow: true, sub, jti };
    if (status === 'unproven') return { allow: true, sub, jti, unproven: true };
    if (status === 'revoked') return { allow: false, reason: 'token_revoked', sub, jti };
    return this.#allowUnknown
      ? { allow: true, sub, jti, unverified: true }
      : { allow: false, reason: 'revocation_unavailable', sub, jti };
  }

  #done(decision: AuthzDecision, via: Transport, started: number): AuthzDecision {
    const at = Date.now();
    this.#latency?.observe({ via }, (performance.now() - started) / 1000);
    this.#log.record({
      at,
      allow: decision.allow,
      reason: decisionLabel(decision),
      ...(decision.sub !== undefined ? { sub: decision.sub } : {}),
      ...(decision.jti !== undefined ? { jti: decision.jti } : {}),
      via,
    });
    return decision;
  }
}
