import type { Dataset } from './dataset.ts';

type IndexFn<V> = (value: V) => string | undefined;

/**
 * One generation of a replica's data: the entries and their secondary
 * indexes, always changed together through set/delete/replace, so an index
 * never disagrees with the entries. A resync builds a new Store off to the
 * side and swaps it in with one assignment, so readers never see half of one.
 */
export class Store<V> {
  readonly #entries = new Map<string, V>();
  readonly #indexes = new Map<string, Map<string, Set<string>>>();
  readonly #indexFns: Array<[Map<string, Set<string>>, IndexFn<V>]> = [];

  constructor(dataset: Pick<Dataset<V>, 'indexes'>) {
    for (const [name, fn] of Object.entries(dataset.indexes ?? {})) {
      const index = new Map<string, Set<string>>();
      this.#indexes.set(name, index);
      this.#indexFns.push([index, fn]);
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): V | undefined {
    return this.#entries.get(key);
  }

  entries(): IterableIterator<[string, V]> {
    return this.#entries.entries();
  }

  values(): IterableIterator<V> {
    return this.#entries.values();
  }

  hasIndex(name: string): boolean {
    return this.#indexes.has(name);
  }

  /** The keys whose index `name` has the term `term` (live set: do not change it). */
  byIndex(name: string, term: string): ReadonlySet<string> | undefined {
    return this.#indexes.get(name)?.get(term);
  }

  /** Terms in index `name` (for tests and diagnostics). */
  indexTerms(name: string): string[] {
    return [...(this.#indexes.get(name)?.keys() ?? [])];
  }

  /** Sets the entry; returns the value it replaced. */
  set(key: string, value: V): V | undefined {
    const previous = this.#entries.get(key);
    if (this.#indexFns.length > 0) {
      if (previous !== undefined) this.#unindex(key, previous);
      this.#index(key, value);
    }
    this.#entries.set(key, value);
    return previous;
  }

  /** Sets an entry of a snapshot being loaded: nothing to return, so one hash lookup instead of two. */
  load(key: string, value: V): void {
    if (this.#indexFns.length > 0) this.set(key, value);
    else this.#entries.set(key, value);
  }

  /** Deletes the entry; returns the value it held. */
  delete(key: string): V | undefined {
    const previous = this.#entries.get(key);
    if (previous === undefined) return undefined;
    if (this.#indexFns.length > 0) this.#unindex(key, previous);
    this.#entries.delete(key);
    return previous;
  }

  /** Empties the store and fills it with `entries`. */
  replace(entries: Iterable<readonly [string, V]>): void {
    this.#entries.clear();
    for (const index of this.#indexes.values()) index.clear();
    for (const [k, v] of entries) this.set(k, v);
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
