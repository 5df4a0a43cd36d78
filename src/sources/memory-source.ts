import type { SnapshotSource } from '../replica/source.ts';

/**
 * An in-memory source of truth for unit tests and embedded use. `write()`
 * bumps the version like the outbox does and returns it.
 */
export class MemorySource<V> implements SnapshotSource<V> {
  readonly entries = new Map<string, V>();
  #version = 0;
  /** Set to make the next calls fail (fault injection). */
  failWith: Error | undefined;

  get currentVersion(): number {
    return this.#version;
  }

  set(key: string, value: V): number {
    this.entries.set(key, value);
    return ++this.#version;
  }

  delete(key: string): number {
    this.entries.delete(key);
    return ++this.#version;
  }

  replace(entries: Iterable<[string, V]>): number {
    this.entries.clear();
    for (const [k, v] of entries) this.entries.set(k, v);
    return ++this.#version;
  }

  load(put: (key: string, value: V) => void): Promise<{ version: number }> {
    if (this.failWith) return Promise.reject(this.failWith);
    const version = this.#version;
    for (const [k, v] of this.entries) put(k, v);
    return Promise.resolve({ version });
  }

  version(): Promise<number> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.#version);
  }

  get(key: string): Promise<V | undefined> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.entries.get(key));
  }
}
