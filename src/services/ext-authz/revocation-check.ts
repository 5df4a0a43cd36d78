import { performance } from 'node:perf_hooks';
import { BLACKLIST_KEY_PREFIX } from '../../datasets/blacklist.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import type { RedisClient } from '../../redis/client.ts';

/**
 * `revoked`, `ok`, `unknown` when the source of truth could not be asked, or
 * `unproven`: not revoked as far as a replica that follows every event knows,
 * while it cannot prove it is current because Redis cannot be read.
 */
export type RevocationStatus = 'revoked' | 'ok' | 'unknown' | 'unproven';

/** Where ext-authz learns whether a token id was revoked (AUTHZ_BLACKLIST). */
export interface RevocationList {
  readonly mode: 'replica' | 'redis';
  /** Synchronous whenever the answer is local: the common path allocates no promise. */
  status(jti: string): RevocationStatus | Promise<RevocationStatus>;
}

/**
 * One Redis EXISTS per check, bounded by a short deadline (fail fast, not hang).
 * One sweeper timer serves every lookup in flight: a timer per command (node-redis's
 * own `timeout`) cost about 15% of the CPU of a check under load.
 */
export function redisLookup(
  client: RedisClient,
  timeoutMs: number,
  prefix = BLACKLIST_KEY_PREFIX,
): (jti: string) => Promise<RevocationStatus> {
  const waiting = new Map<(status: RevocationStatus) => void, number>();
  let sweeper: ReturnType<typeof setInterval> | undefined;
  const sweep = (): void => {
    const now = performance.now();
    for (const [settle, deadline] of waiting) if (deadline <= now) settle('unknown');
    if (waiting.size === 0) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };
  return (jti) => {
    if (!client.isReady) return Promise.resolve('unknown');
    return new Promise<RevocationStatus>((resolve) => {
      const settle = (status: RevocationStatus): void => {
        if (waiting.delete(settle)) resolve(status);
      };
      waiting.set(settle, performance.now() + timeoutMs);
      if (!sweeper) {
        sweeper = setInterval(sweep, Math.max(1, Math.floor(timeoutMs / 4)));
        sweeper.unref();
      }
      client.exists(prefix + jti).then(
        (n) => settle(n > 0 ? 'revoked' : 'ok'),
        () => settle('unknown'),
      );
    });
  };
}

/**
 * The seed's fix: the local, synced blacklist answers. While the replica is
 * not `ready` (bus down, a repair running, no proof within the bound) a jti
 * it does not hold may have been revoked, so Redis is asked. If Redis cannot
 * answer either and the replica still follows the bus, its answer stands
 * (`unproven`): a Redis outage must not fail all authentication (seed 001),
 * and no logout can commit while Redis is down. Otherwise the caller's policy
 * decides.
 */
export class ReplicaRevocationList implements RevocationList {
  readonly mode = 'replica' as const;
  readonly #replica: ReplicatedCache<number>;
  readonly #lookup: (jti: string) => Promise<RevocationStatus>;

  constructor(replica: ReplicatedCache<number>, lookup: (jti: string) => Promise<RevocationStatus>) {
    this.#replica = replica;
    this.#lookup = lookup;
  }

  status(jti: string): RevocationStatus | Promise<RevocationStatus> {
    if (this.#replica.has(jti)) return 'revoked';
    if (this.#replica.state === 'ready') return 'ok';
    return this.#lookup(jti).then((status) =>
      status === 'unknown' && this.#replica.following && !this.#replica.has(jti) ? 'unproven' : status,
    );
  }
}

/** The seed's "before": a Redis round trip per check. The operator's fallback and the benchmark baseline. */
export class RedisRevocationList implements RevocationList {
  readonly mode = 'redis' as const;
  readonly #lookup: (jti: string) => Promise<RevocationStatus>;

  constructor(lookup: (jti: string) => Promise<RevocationStatus>) {
    this.#lookup = lookup;
  }

  status(jti: string): Promise<RevocationStatus> {
    return this.#lookup(jti);
  }
}
