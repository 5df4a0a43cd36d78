import type { RedisClient } from '../redis/client.ts';
import type { ClearEntries, OutboxEntry, OutboxStore } from './store.ts';

export interface RedisOutboxEntry extends OutboxEntry {
  /** The list element as stored: what is removed once the broker confirmed it. */
  readonly raw: string;
}

export interface RedisOutboxStoreOptions {
  redis: RedisClient;
  /** The list the writer's script appends to (RPUSH, oldest first). */
  listKey: string;
  /** The source's epoch, read with each batch: pending entries belong to the current one. */
  epochKey?: string;
  /** Reads one list element; undefined for a malformed one (it is dropped). */
  parse: (raw: string, epoch: string | undefined) => OutboxEntry | undefined;
  /** Called for each malformed element before it is dropped (the owner's log line). */
  onMalformed?: (raw: string) => void;
}

/**
 * A Redis list as an outbox: the writer's script commits its change and
 * RPUSHes the event in one atomic step (Redis runs a script alone); an
 * entry is removed (LREM) once published. No lock: any number of drainers
 * may publish the same entry, a duplicate replicas drop by version.
 */
export class RedisOutboxStore implements OutboxStore<RedisOutboxEntry> {
  readonly #redis: RedisClient;
  readonly #listKey: string;
  readonly #epochKey: string | undefined;
  readonly #parse: RedisOutboxStoreOptions['parse'];
  readonly #onMalformed: (raw: string) => void;

  constructor(options: RedisOutboxStoreOptions) {
    this.#redis = options.redis;
    this.#listKey = options.listKey;
    this.#epochKey = options.epochKey;
    this.#parse = options.parse;
    this.#onMalformed = options.onMalformed ?? (() => undefined);
  }

  async batch<T>(
    limit: number,
    work: (entries: readonly RedisOutboxEntry[], clear: ClearEntries<RedisOutboxEntry>) => Promise<T>,
  ): Promise<T> {
    const [raws, epoch] = await Promise.all([
      this.#redis.lRange(this.#listKey, 0, limit - 1),
      this.#epochKey === undefined ? Promise.resolve(null) : this.#redis.get(this.#epochKey),
    ]);
    const entries: RedisOutboxEntry[] = [];
    for (const raw of raws) {
      // Pending entries are in the current epoch: a restart that lost the epoch lost them too.
      const parsed = this.#parse(raw, epoch ?? undefined);
      if (parsed) {
        entries.push({ ...parsed, raw });
        continue;
      }
      this.#onMalformed(raw);
      await this.#redis.lRem(this.#listKey, 1, raw);
    }
    return work(entries, (sent) => this.clear(sent));
  }

  async clear(sent: readonly RedisOutboxEntry[]): Promise<void> {
    for (const entry of sent) await this.#redis.lRem(this.#listKey, 1, entry.raw);
  }

  pending(): Promise<number> {
    return this.#redis.lLen(this.#listKey);
  }
}
