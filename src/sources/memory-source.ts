import { randomBytes } from 'node:crypto';
import type { Change } from '../events/event.ts';
import type { Dataset } from '../replica/dataset.ts';
import type { DigestAlgorithm } from '../replica/digest.ts';
import { Digest } from '../replica/digest.ts';
import { EntryHasher } from '../replica/generation.ts';
import type {
  SnapshotResult,
  SnapshotSource,
  SourceChange,
  SourceChanges,
  SourceState,
} from '../replica/source.ts';

export interface MemorySourceOptions<V> {
  /**
   * With a dataset, the source keeps a content digest of its entries and a
   * change log (with `dataset.encode`), like the PostgreSQL and Redis sources.
   */
  dataset?: Dataset<V>;
  /** @default 'sha1' */
  digestAlgorithm?: DigestAlgorithm;
  /** Changes kept for `changesSince`. @default 1000 */
  logSize?: number;
}

export function newEpoch(): string {
  return randomBytes(8).toString('hex');
}

/**
 * An in-memory source of truth for unit tests, the simulator and embedded
 * use. Each write bumps the version like the outbox does and returns it; with
 * a dataset it also keeps the digest and the change log. `reset()` is a
 * restart that lost everything (a new epoch).
 */
export class MemorySource<V> implements SnapshotSource<V> {
  readonly entries = new Map<string, V>();
  readonly digestAlgorithm: DigestAlgorithm | undefined;
  readonly #dataset: Dataset<V> | undefined;
  readonly #hasher: EntryHasher<V> | undefined;
  readonly #logSize: number;
  #epoch = newEpoch();
  #version = 0;
  #digest = new Digest();
  #log: SourceChange[] = [];
  /** Set to make the next calls fail (fault injection). */
  failWith: Error | undefined;

  constructor(options: MemorySourceOptions<V> = {}) {
    this.#dataset = options.dataset;
    this.digestAlgorithm = options.dataset?.digestText ? (options.digestAlgorithm ?? 'sha1') : undefined;
    this.#hasher = options.dataset ? EntryHasher.for(options.dataset, this.digestAlgorithm) : undefined;
    this.#logSize = options.logSize ?? 1000;
  }

  get currentVersion(): number {
    return this.#version;
  }

  get epoch(): string {
    return this.#epoch;
  }

  set(key: string, value: V): number {
    return this.write({ kind: 'set', key, value });
  }

  delete(key: string): number {
    return this.write({ kind: 'delete', key });
  }

  replace(entries: Iterable<[string, V]>): number {
    return this.write({ kind: 'replace', entries: [...entries] });
  }

  /** A versioned write (what cachecast writers do): returns the new version. */
  write(change: Change<V>): number {
    this.#apply(change);
    this.#version++;
    if (this.#dataset?.encode) {
      this.#log.push({ version: this.#version, event: this.#dataset.encode(change) });
      if (this.#log.length > this.#logSize) this.#log.shift();
    }
    return this.#version;
  }

  /**
   * A write that bypasses versions (a foreign writer, like the seed's Python
   * job with the PostgreSQL trigger): the digest follows, the log does not.
   */
  writeUnversioned(change: Change<V>): void {
    this.#apply(change);
  }

  /** A restart that lost everything: a new epoch at version 0. */
  reset(): void {
    this.entries.clear();
    this.#epoch = newEpoch();
    this.#version = 0;
    this.#digest = new Digest();
    this.#log = [];
  }

  #apply(change: Change<V>): void {
    const h = this.#hasher;
    const xor = (key: string, value: V | undefined): void => {
      if (!h || value === undefined) return;
      const d = h.delta(key, value);
      this.#digest.xor(d.bucket, d.hi, d.lo);
    };
    switch (change.kind) {
      case 'set':
        xor(change.key, this.entries.get(change.key));
        this.entries.set(change.key, change.value);
        xor(change.key, change.value);
        break;
      case 'delete':
        xor(change.key, this.entries.get(change.key));
        this.entries.delete(change.key);
        break;
      case 'replace':
        for (const [k, v] of this.entries) xor(k, v);
        this.entries.clear();
        for (const [k, v] of change.entries) {
          this.entries.set(k, v);
          xor(k, v);
        }
        break;
      case 'reload':
        break;
    }
  }

  load(put: (key: string, value: V) => void): Promise<SnapshotResult> {
    if (this.failWith) return Promise.reject(this.failWith);
    const version = this.#version;
    for (const [k, v] of this.entries) put(k, v);
    return Promise.resolve({
      version,
      epoch: this.#epoch,
      digest: this.digestAlgorithm ? { atVersion: version, buckets: this.#digest.toBuckets() } : undefined,
    });
  }

  version(): Promise<number> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.#version);
  }

  state(fromBucket: number): Promise<SourceState> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.#state(fromBucket));
  }

  #state(fromBucket: number): SourceState {
    const state: SourceState = { epoch: this.#epoch, version: this.#version };
    // Entries that never expire are all in one bucket: the limit is for expiring ones.
    const from = this.#dataset?.expireAt ? fromBucket : -Infinity;
    if (this.digestAlgorithm) state.digest = this.#digest.combined(from);
    return state;
  }

  changesSince(epoch: string, version: number, fromBucket: number): Promise<SourceChanges | undefined> {
    if (this.failWith) return Promise.reject(this.failWith);
    if (epoch !== this.#epoch || version > this.#version) return Promise.resolve(undefined);
    const changes = this.#log.filter((c) => c.version > version);
    const complete = version === this.#version || changes[0]?.version === version + 1;
    if (!complete || changes.length !== this.#version - version) return Promise.resolve(undefined);
    return Promise.resolve({ epoch, changes, state: this.#state(fromBucket) });
  }

  get(key: string): Promise<V | undefined> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.entries.get(key));
  }
}
