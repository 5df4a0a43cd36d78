/**
 * Exponential backoff with full jitter: a random delay in [base, min(cap, base * 2^attempt)].
 * Jitter keeps a fleet of replicas from reconnecting or resyncing in lockstep.
 */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(baseMs + random() * Math.max(0, ceiling - baseMs));
}
