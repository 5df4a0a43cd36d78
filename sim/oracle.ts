import type { Change } from '../src/events/event.ts';
import type { Dataset } from '../src/replica/dataset.ts';
import { bucketOf, DIGEST_BUCKET_S } from '../src/replica/digest.ts';
import type { MemorySource } from '../src/sources/memory-source.ts';

interface Step {
  time: number;
  /** Per key touched: the value before the change (undefined: absent). */
  before: Array<[string, unknown]>;
}

/**
 * Knows every value each key of the source has had, to measure how stale a
 * replica's reads are: per key, the replica's value (or its absence) must be
 * one the source held at some moment of the last `windowMs`, and its
 * staleness is how long ago the source moved on from it. Per key, because
 * that is what a read sees, and because writers whose changes commute (or a
 * foreign publisher beside versioned ones) legitimately reach a replica in
 * another order than they committed.
 *
 * Entries about to expire (before the digest's comparable buckets) leave each
 * side at slightly different moments by design, and count as absent.
 */
export class Oracle<V> {
  readonly #steps: Step[] = [];

  constructor(
    private readonly dataset: Dataset<V>,
    private readonly source: MemorySource<V>,
  ) {}

  /** Call before the source applies `change`. */
  record(time: number, change: Change<V>): void {
    const entries = this.source.entries;
    const keys =
      change.kind === 'set' || change.kind === 'delete'
        ? [change.key]
        : change.kind === 'replace'
          ? new Set([...entries.keys(), ...change.entries.map(([k]) => k)])
          : [];
    this.#push({ time, before: [...keys].map((k) => [k, entries.get(k)]) });
  }

  /** Call before the source is reset to empty. */
  recordReset(time: number): void {
    this.#push({ time, before: [...this.source.entries] });
  }

  #push(step: Step): void {
    this.#steps.push(step);
    if (this.#steps.length > 5000) this.#steps.splice(0, 1000);
  }

  #text(value: unknown, cutoffMs: number): string | undefined {
    if (value === undefined) return undefined;
    const at = this.dataset.expireAt?.(value as V);
    return at !== undefined && at < cutoffMs ? undefined : JSON.stringify(value);
  }

  /**
   * The replica's staleness (ms; 0 when every key matches the source now), or
   * a description of a key whose value the source did not hold in the window.
   */
  staleness(now: number, entries: Array<[string, V]>, windowMs: number): number | string {
    const cutoff = (bucketOf(now) + 2) * DIGEST_BUCKET_S * 1000;
    const replica = new Map<string, string | undefined>();
    for (const [k, v] of entries) replica.set(k, this.#text(v, cutoff));
    // Per key, its earlier values within the window, newest first, with when the source left each.
    const history = new Map<string, Array<[string | undefined, number]>>();
    for (let i = this.#steps.length - 1; i >= 0; i--) {
      const step = this.#steps[i]!;
      if (step.time < now - windowMs) break;
      for (const [k, before] of step.before) {
        let list = history.get(k);
        if (!list) history.set(k, (list = []));
        list.push([this.#text(before, cutoff), step.time]);
      }
    }
    const keys = new Set([...replica.keys(), ...this.source.entries.keys()]);
    let staleness = 0;
    for (const key of keys) {
      const held = replica.get(key);
      if (held === this.#text(this.source.entries.get(key), cutoff)) continue;
      const past = history.get(key)?.find(([value]) => value === held);
      if (!past) {
        return `holds ${key}=${held ?? '(absent)'}, which the source has not held in the last ${windowMs} ms (it has ${this.#text(this.source.entries.get(key), cutoff) ?? '(absent)'})`;
      }
      staleness = Math.max(staleness, now - past[1]);
    }
    return staleness;
  }
}
