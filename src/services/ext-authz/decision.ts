/** Why a request was denied: the JSON `error` code in a 401 (CONTRACT.md). */
export type DenyReason =
  | 'missing_token'
  | 'invalid_token'
  | 'token_expired'
  | 'token_revoked'
  /** Neither the replica nor Redis could say whether the token was revoked (policy: refuse). */
  | 'revocation_unavailable';

/** What ext-authz answers for one request (the stack monitor's Decision is how the dashboard shows one). */
export type AuthzDecision =
  | {
      readonly allow: true;
      readonly sub: string;
      readonly jti: string;
      /** Allowed by AUTHZ_UNKNOWN_REVOCATION=allow: nothing could say whether it was revoked. */
      readonly unverified?: boolean;
      /** Allowed by a replica that follows the bus but could not prove it is current (Redis down). */
      readonly unproven?: boolean;
    }
  | { readonly allow: false; readonly reason: DenyReason; readonly jti?: string; readonly sub?: string };

/**
 * Metric label of a decision: the deny reason, `allow`, `allow_unverified`
 * (policy: allow), or `allow_unproven` (a following replica while Redis is down).
 */
export function decisionLabel(decision: AuthzDecision): string {
  if (!decision.allow) return decision.reason;
  return decision.unverified ? 'allow_unverified' : decision.unproven ? 'allow_unproven' : 'allow';
}

export interface RecentDecision {
  at: number;
  allow: boolean;
  reason: string;
  sub?: string;
  jti?: string;
  via: 'http' | 'grpc';
}

/** Counts by label and the last few decisions, for the admin port's /decisions (the dashboard). */
export class DecisionLog {
  readonly counts: Record<string, number> = {};
  readonly #recent: RecentDecision[] = [];
  readonly #capacity: number;
  #next = 0;

  constructor(capacity = 50) {
    this.#capacity = capacity;
  }

  record(entry: RecentDecision): void {
    this.counts[entry.reason] = (this.counts[entry.reason] ?? 0) + 1;
    if (this.#recent.length < this.#capacity) this.#recent.push(entry);
    else this.#recent[this.#next] = entry;
    this.#next = (this.#next + 1) % this.#capacity;
  }

  /** Newest first. */
  recent(): RecentDecision[] {
    const n = this.#recent.length;
    const out: RecentDecision[] = [];
    for (let i = 1; i <= n; i++) out.push(this.#recent[(this.#next - i + n) % n]!);
    return out;
  }

  snapshot(): { counts: Record<string, number>; recent: RecentDecision[] } {
    return { counts: { ...this.counts }, recent: this.recent() };
  }
}
