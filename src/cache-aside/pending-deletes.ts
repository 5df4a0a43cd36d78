import type { Logger } from '../logger.ts';
import type { CacheAsideCounters } from './stats.ts';

/** A delete Redis has not confirmed: the key's declared name, and when it was asked for (see `seq`). */
interface PendingDelete {
  name: string;
  seq: number;
}

/**
 * The invalidations whose DEL Redis has not confirmed (done once Redis is
 * back; until then the cache does not read those keys from Redis), bounded:
 * past the limit the oldest is forgotten and lives out its TTL.
 *
 * It also numbers invalidations, to order them against lookups and deletes:
 * each invalidation takes the next number; a lookup notes the current one
 * when it starts, a DEL when it is sent. A remembered delete with a number
 * above a lookup's came after that lookup started (its data may predate the
 * write): the lookup's write-back must neither be made nor settle it. A DEL
 * settles only the remembered deletes numbered up to its own.
 */
export class PendingDeletes {
  readonly #max: number;
  readonly #logger: Logger;
  readonly #counters: CacheAsideCounters;
  /** Redis key -> deletes Redis has not confirmed. Insertion order = age. */
  readonly #pending = new Map<string, PendingDelete>();
  #seq = 0;

  constructor(max: number, logger: Logger, counters: CacheAsideCounters) {
    this.#max = max;
    this.#logger = logger;
    this.#counters = counters;
  }

  /** The number of the latest invalidation (a lookup or a DEL notes it when it starts). */
  get seq(): number {
    return this.#seq;
  }

  /** Numbers a new invalidation. */
  next(): number {
    return ++this.#seq;
  }

  get size(): number {
    return this.#pending.size;
  }

  has(redisKey: string): boolean {
    return this.#pending.has(redisKey);
  }

  /** Whether a delete of `redisKey` asked for after `seq` is still unconfirmed. */
  invalidatedSince(redisKey: string, seq: number): boolean {
    const pending = this.#pending.get(redisKey);
    return pending !== undefined && pending.seq > seq;
  }

  /**
   * Forgets the remembered deletes of `redisKeys` numbered up to `seq`: a DEL
   * sent (or a value read) at `seq` covers them. A later one stays.
   */
  settle(redisKeys: readonly string[], seq: number): void {
    for (const k of redisKeys) {
      const pending = this.#pending.get(k);
      if (pending !== undefined && pending.seq <= seq) this.#pending.delete(k);
    }
  }

  remember(redisKey: string, name: string, seq: number): void {
    if (this.#max === 0) {
      this.#counters.invalidations_forgotten++;
      return;
    }
    const previous = this.#pending.get(redisKey);
    // An invalidation whose DEL failed after a later one was remembered must not lower its number.
    if (previous !== undefined && previous.seq > seq) return;
    this.#pending.delete(redisKey);
    this.#pending.set(redisKey, { name, seq });
    while (this.#pending.size > this.#max) {
      const oldest = this.#pending.keys().next().value;
      if (oldest === undefined) break;
      this.#pending.delete(oldest);
      this.#counters.invalidations_forgotten++;
      this.#logger.warn(
        { key: oldest },
        'too many unconfirmed invalidations: the oldest will live out its TTL',
      );
    }
  }

  /** The `count` oldest remembered keys, and the declared name of the first (for logs and alerts). */
  oldest(count: number): { keys: string[]; name: string } {
    const batch = [...this.#pending].slice(0, count);
    return { keys: batch.map(([k]) => k), name: batch[0]![1].name };
  }
}
