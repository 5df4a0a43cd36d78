import type { Clock } from '../clock.ts';

interface Entry {
  json: string;
  expiresAt: number;
}

/**
 * The optional in-process tier: serialized values by Redis key, with a TTL
 * per entry and least-recently-used eviction past `maxEntries`. It holds the
 * JSON text, not the object, so every caller gets its own copy (no caller can
 * change what the next one reads) and a value looks the same whichever tier
 * answered.
 */
export class MemoryTier {
  readonly #entries = new Map<string, Entry>();
  readonly #maxEntries: number;
  readonly #clock: Clock;
  evictions = 0;

  constructor(maxEntries: number, clock: Clock) {
    this.#maxEntries = maxEntries;
    this.#clock = clock;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): string | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.#clock.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    // Most recently used last: re-insert.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.json;
  }

  set(key: string, json: string, ttlMs: number): void {
    if (this.#maxEntries === 0 || ttlMs <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { json, expiresAt: this.#clock.now() + ttlMs });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
      this.evictions++;
    }
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }
}
