import type { createClient } from 'redis';
import type { SnapshotSource } from '../replica/source.ts';

export type RedisClient = ReturnType<typeof createClient>;

export interface RedisKeySourceOptions<V> {
  client: RedisClient;
  /** Every key under this prefix is an entry; the rest of the key is its key. */
  prefix: string;
  /** A string integer bumped (INCR) in the same MULTI as every write. */
  versionKey: string;
  /** Keys asked for per SCAN step. @default 1000 */
  scanCount?: number;
  /** SCAN steps whose TTL pipelines may be in flight at once. @default 8 */
  parallelBatches?: number;
  /** Builds the stored value from the entry's absolute expiry (epoch ms; undefined: no TTL). */
  toValue(expireAtMs: number | undefined): V | undefined;
  now?: () => number;
}

/**
 * A dataset kept as one Redis key per entry (seed 001's `blacklist:{jti}` with
 * a TTL). Loads with SCAN (never KEYS, which blocks Redis) and reads TTLs in
 * pipelines, overlapping the next SCAN step with the current TTL batch.
 *
 * Redis cannot read many keys and a version atomically without blocking it, so
 * the version is read first: events newer than it are replayed over the
 * snapshot, which is harmless for idempotent entries.
 */
export class RedisKeySource<V> implements SnapshotSource<V> {
  readonly #o: Required<Omit<RedisKeySourceOptions<V>, 'now'>> & { now: () => number };

  constructor(options: RedisKeySourceOptions<V>) {
    this.#o = { scanCount: 1000, parallelBatches: 8, now: Date.now, ...options };
  }

  async load(put: (key: string, value: V) => void): Promise<{ version: number }> {
    const version = await this.version();
    const { client, prefix, scanCount, parallelBatches } = this.#o;
    const inFlight: Array<Promise<void>> = [];
    for await (const keys of client.scanIterator({ MATCH: `${escapeGlob(prefix)}*`, COUNT: scanCount })) {
      if (keys.length === 0) continue;
      inFlight.push(this.#readTtls(keys, put));
      if (inFlight.length >= parallelBatches) await inFlight.shift();
    }
    await Promise.all(inFlight);
    return { version };
  }

  async #readTtls(keys: string[], put: (key: string, value: V) => void): Promise<void> {
    const { client, prefix } = this.#o;
    // Commands issued in one tick go out as one pipeline.
    const ttls = await Promise.all(keys.map((key) => client.pTTL(key)));
    const now = this.#o.now();
    for (let i = 0; i < keys.length; i++) {
      const ttl = ttls[i]!;
      if (ttl === -2) continue; // expired between SCAN and PTTL
      const value = this.#o.toValue(ttl === -1 ? undefined : now + ttl);
      if (value !== undefined) put(keys[i]!.slice(prefix.length), value);
    }
  }

  async version(): Promise<number> {
    const raw = await this.#o.client.get(this.#o.versionKey);
    const version = raw === null ? 0 : Number(raw);
    return Number.isSafeInteger(version) && version >= 0 ? version : 0;
  }

  async get(key: string): Promise<V | undefined> {
    const ttl = await this.#o.client.pTTL(this.#o.prefix + key);
    if (ttl === -2) return undefined;
    return this.#o.toValue(ttl === -1 ? undefined : this.#o.now() + ttl);
  }
}

/** SCAN MATCH is a glob: a prefix must match itself literally. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
