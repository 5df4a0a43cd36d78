import type { Dataset } from './dataset.ts';

type IndexFn<V> = (value: V) => string | undefined;

/**
 * One generation of a replica's data: the entries and their secondary
 * indexes, always updated together. A resync builds a new Store off to the
 * side and swaps it in with one assignment, so readers never see half of one.
 */
export class Store<V> {
  readonly entries = new Map<string, V>();
  readonly indexes = new Map<string, Map<string, Set<string>>>();
  readonly #indexFns: Array<[Map<string, Set<string>>, IndexFn<V>]> = [];

  constructor(dataset: Dataset<V>) {
    for (const [name, fn] of Object.entries(dataset.indexes ?? {})) {
      const index = new Map<string, Set<string>>();
      this.indexes.set(name, index);
      this.#indexFns.push([index, fn]);
    }
  }

  set(key: string, value: V): void {
    if (this.#indexFns.length > 0) {
      const previous = this.entries.get(key);
      if (previous !== undefined) this.#unindex(key, previous);
      this.#index(key, value);
    }
    this.entries.set(key, value);
  }

  delete(key: string): boolean {
    if (this.#indexFns.length > 0) {
      const previous = this.entries.get(key);
      if (previous !== undefined) this.#unindex(key, previous);
    }
    return this.entries.delete(key);
  }

  #index(key: string, value: V): void {
    for (const [index, fn] of this.#indexFns) {
      const term = fn(value);
      if (term === undefined) continue;
      let keys = index.get(term);
      if (!keys) index.set(term, (keys = new Set()));
      keys.add(key);
    }
  }

  #unindex(key: string, value: V): void {
    for (const [index, fn] of this.#indexFns) {
      const term = fn(value);
      if (term === undefined) continue;
      const keys = index.get(term);
      if (!keys) continue;
      keys.delete(key);
      if (keys.size === 0) index.delete(term);
    }
  }
}
