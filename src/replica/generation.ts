import type { Change } from '../events/event.ts';
import type { Dataset } from './dataset.ts';
import type { DigestAlgorithm, DigestDelta } from './digest.ts';
import { bucketOf, combineDeltas, Digest, entryHash, NO_EXPIRY_BUCKET, xorHex } from './digest.ts';
import { Sequencer } from './sequencer.ts';
import { Store } from './store.ts';

/** An event as the replica handles it: decoded, its envelope checked. */
export interface ReplicaEvent<V> {
  readonly version: number | undefined;
  readonly epoch: string | undefined;
  readonly change: Change<V>;
  readonly publishedAt?: number | undefined;
  readonly origin?: string | undefined;
}

export type VersionedEvent<V> = ReplicaEvent<V> & { readonly version: number };

/** Versions whose digest changes are remembered, to compare with a heartbeat that trails the events. */
const HISTORY = 256;

/** How a dataset's entries hash into its digest (undefined: the dataset or its source keeps none). */
export class EntryHasher<V> {
  readonly #text: (key: string, value: V) => string;
  readonly #expireAt: ((value: V) => number | undefined) | undefined;
  readonly #algorithm: DigestAlgorithm;

  static for<V>(dataset: Dataset<V>, algorithm: DigestAlgorithm | undefined): EntryHasher<V> | undefined {
    if (!algorithm || !dataset.digestText) return undefined;
    return new EntryHasher(dataset.digestText.bind(dataset), dataset.expireAt?.bind(dataset), algorithm);
  }

  constructor(
    text: (key: string, value: V) => string,
    expireAt: ((value: V) => number | undefined) | undefined,
    algorithm: DigestAlgorithm,
  ) {
    this.#text = text;
    this.#expireAt = expireAt;
    this.#algorithm = algorithm;
  }

  delta(key: string, value: V): DigestDelta {
    const [hi, lo] = entryHash(this.#algorithm, this.#text(key, value));
    const at = this.#expireAt?.(value);
    return { bucket: at === undefined ? NO_EXPIRY_BUCKET : bucketOf(at), hi, lo };
  }
}

export interface GenerationInit<V> {
  dataset: Dataset<V>;
  hasher: EntryHasher<V> | undefined;
  epoch: string;
  version: number;
  store: Store<V>;
  /** The source's digest, adopted once this generation reaches `atVersion`. */
  digest?: { atVersion: number; buckets: Array<[number, string]> } | undefined;
  now: () => number;
}

/**
 * One generation of a replica: its data (Store), the `(epoch, version)` it
 * corresponds to, the sequencer that orders its events, and its digest. A
 * resync builds the next generation from a snapshot and rebases the waiting
 * events onto it; the live path and the rebase go through the same `offer` /
 * `release`, so events are ordered by version on both.
 *
 * The digest changes only in version order (at release), so it always is
 * the digest of `version`: a commutative change applied early (ahead of a
 * gap) keeps its digest delta until its version is released.
 */
export class Generation<V> {
  readonly epoch: string;
  #store: Store<V>;
  readonly #dataset: Dataset<V>;
  readonly #hasher: EntryHasher<V> | undefined;
  readonly #seq: Sequencer<VersionedEvent<V>>;
  #digest: Digest | undefined;
  #pendingDigest: { atVersion: number; buckets: Array<[number, string]> } | undefined;
  /**
   * Commutative changes applied before their version was released: their
   * digest deltas (recorded at release), and how to take them back if the
   * version turns out never to have been committed.
   */
  readonly #early = new Map<
    number,
    { deltas: DigestDelta[]; key: string; previous: V | undefined; at: number }
  >();
  /** Per released version, the digest deltas it made and when its change entered the store (the last HISTORY versions). */
  readonly #history: Array<{ version: number; deltas: DigestDelta[]; at: number }> = [];
  /** Unversioned changes applied while the source's digest waits to be adopted: they go on top of it. */
  readonly #beforeAdoption: DigestDelta[] = [];
  readonly #now: () => number;
  /** History before this version is unusable: an unversioned change or a replace came after it. */
  #historyFloor: number;
  /** A released `reload` marker: this generation's data is behind its version until the next load. */
  #reloadAt: number | undefined;

  constructor(init: GenerationInit<V>) {
    this.#dataset = init.dataset;
    this.#hasher = init.hasher;
    this.epoch = init.epoch;
    this.#store = init.store;
    this.#seq = new Sequencer(init.version);
    this.#historyFloor = init.version;
    this.#pendingDigest = init.hasher ? init.digest : undefined;
    this.#now = init.now;
    this.#adoptDigestIfDue();
  }

  get store(): Store<V> {
    return this.#store;
  }

  get version(): number {
    return this.#seq.version;
  }

  /** Versioned events waiting past a gap. */
  get held(): number {
    return this.#seq.held;
  }

  get firstHeld(): number | undefined {
    return this.#seq.firstHeld();
  }

  heldEvents(): Array<VersionedEvent<V>> {
    return this.#seq.heldEvents();
  }

  /** Whether this generation has a digest to compare (the source keeps one, and it was adopted). */
  get hasDigest(): boolean {
    return this.#digest !== undefined;
  }

  get reloadAt(): number | undefined {
    return this.#reloadAt;
  }

  /** False for a duplicate. */
  offer(event: VersionedEvent<V>): boolean {
    return this.#seq.offer(event, this.#now());
  }

  /** When the longest-waiting held event arrived. */
  get oldestHeldAt(): number | undefined {
    return this.#seq.oldestHeldAt();
  }

  /**
   * Applies a held commutative change (set or delete) now, ahead of its
   * version (a revocation must not wait for another writer's event); its
   * digest delta waits for the version.
   */
  applyEarly(event: VersionedEvent<V>): void {
    const { change } = event;
    if (change.kind !== 'set' && change.kind !== 'delete') return;
    const previous = this.#store.get(change.key);
    this.#early.set(event.version, {
      deltas: this.#apply(change),
      key: change.key,
      previous,
      at: this.#now(),
    });
  }

  /**
   * Releases every event that continues the sequence; calls `released` for
   * each (`early`: its change was applied before). Stops at a reload marker.
   */
  release(released: (event: VersionedEvent<V>, early: boolean) => void): void {
    if (this.#reloadAt !== undefined) return;
    for (let event = this.#seq.peek(); event; event = this.#seq.peek()) {
      if (event.change.kind === 'reload') {
        // Not taken: the version stays where the data is, until a load passes the marker.
        this.#reloadAt = event.version;
        return;
      }
      this.#seq.next();
      const early = this.#early.get(event.version);
      if (early) this.#early.delete(event.version);
      const deltas = early?.deltas ?? this.#apply(event.change);
      this.#record(event.version, deltas, early?.at ?? this.#now());
      released(event, early !== undefined);
      this.#adoptDigestIfDue();
    }
  }

  /**
   * Drops held events above `version` that arrived by `arrivedBy` (the source
   * had no such version when read after they came: they were forged), taking
   * back the changes applied early, newest first. Returns how many were dropped.
   */
  dropHeldAbove(version: number, arrivedBy = Infinity): number {
    const dropped = this.#seq.dropAbove(version, arrivedBy).sort((a, b) => b.version - a.version);
    for (const event of dropped) {
      const early = this.#early.get(event.version);
      if (!early) continue;
      this.#early.delete(event.version);
      if (early.previous === undefined) this.#store.delete(early.key);
      else this.#store.set(early.key, early.previous);
    }
    return dropped.length;
  }

  /** An event without a version (a foreign publisher): applies as it comes. */
  applyUnversioned(change: Change<V>): void {
    if (change.kind === 'reload') return;
    const deltas = this.#apply(change);
    if (this.#digest) for (const d of deltas) this.#digest.xor(d.bucket, d.hi, d.lo);
    // The source's digest knows nothing of it (forged, or stale): it must show once adopted.
    else if (this.#pendingDigest) this.#beforeAdoption.push(...deltas);
    this.#historyFloor = this.version;
  }

  /** Removes an expired entry (expired buckets are never compared, so the digest keeps it). */
  expire(key: string): void {
    this.#store.delete(key);
  }

  /** Forgets digest buckets that expired everywhere (memory). */
  dropBucketsBefore(bucket: number): void {
    this.#digest?.dropBefore(bucket);
  }

  /** The digest (hex) at the current version, of the buckets >= `fromBucket`. */
  digest(fromBucket: number): string | undefined {
    return this.#digest?.combined(fromBucket);
  }

  /**
   * The digest this generation had at `version` (<= its version), when the
   * history still reaches it; undefined otherwise.
   */
  digestAt(version: number, fromBucket: number): string | undefined {
    if (!this.#digest || version > this.version || version < this.#historyFloor) return undefined;
    const current = this.#digest.combined(fromBucket);
    if (version === this.version) return current;
    const first = this.#history[0];
    if (!first || first.version > version + 1) return undefined;
    const since = this.#history.filter((h) => h.version > version).flatMap((h) => h.deltas);
    return xorHex(current, combineDeltas(since, fromBucket));
  }

  /**
   * The earliest time a change of a version above `version` entered the
   * store, released or applied early: Infinity when none has, undefined when
   * the history no longer reaches back to `version`. (`early`: false only for
   * the simulator's mutant.)
   */
  enteredAbove(version: number, early = true): number | undefined {
    let first = Infinity;
    if (early) for (const [v, e] of this.#early) if (v > version && e.at < first) first = e.at;
    if (version >= this.version) return first;
    const history = this.#history;
    if (history.length === 0 || history[0]!.version > version + 1) return undefined;
    for (let i = history.length - 1; i >= 0 && history[i]!.version > version; i--)
      first = Math.min(first, history[i]!.at);
    return first;
  }

  #record(version: number, deltas: DigestDelta[], at: number): void {
    if (!this.#digest) return;
    for (const d of deltas) this.#digest.xor(d.bucket, d.hi, d.lo);
    this.#history.push({ version, deltas, at });
    if (this.#history.length > HISTORY) this.#history.shift();
  }

  #adoptDigestIfDue(): void {
    const pending = this.#pendingDigest;
    if (!pending || pending.atVersion !== this.version) return;
    this.#pendingDigest = undefined;
    this.#digest = Digest.from(pending.buckets);
    for (const d of this.#beforeAdoption.splice(0)) this.#digest.xor(d.bucket, d.hi, d.lo);
    this.#history.length = 0;
    this.#historyFloor = this.version;
  }

  /** Applies a change to the store; returns its digest deltas (none without a hasher). */
  #apply(change: Change<V>): DigestDelta[] {
    const hasher = this.#hasher;
    switch (change.kind) {
      case 'set': {
        const previous = this.#store.set(change.key, change.value);
        if (!hasher) return [];
        const deltas = [hasher.delta(change.key, change.value)];
        if (previous !== undefined) deltas.push(hasher.delta(change.key, previous));
        return deltas;
      }
      case 'delete': {
        const previous = this.#store.delete(change.key);
        return hasher && previous !== undefined ? [hasher.delta(change.key, previous)] : [];
      }
      case 'replace': {
        // A whole new store, swapped in with one assignment; its digest is computed afresh.
        const next = new Store(this.#dataset);
        next.replace(change.entries);
        this.#store = next;
        if (hasher && (this.#digest || !this.#pendingDigest)) {
          const digest = new Digest();
          for (const [k, v] of next.entries()) {
            const d = hasher.delta(k, v);
            digest.xor(d.bucket, d.hi, d.lo);
          }
          this.#digest = digest;
          this.#history.length = 0;
          this.#historyFloor = this.version;
        }
        return [];
      }
      case 'reload':
        return [];
    }
  }
}
