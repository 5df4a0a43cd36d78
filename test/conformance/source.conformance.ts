import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Dataset } from '../../src/replica/dataset.ts';
import { comparableFrom, Digest } from '../../src/replica/digest.ts';
import { EntryHasher } from '../../src/replica/generation.ts';
import type { SnapshotResult, SnapshotSource } from '../../src/replica/source.ts';

export interface SourceHarness<V> {
  /** The dataset the source holds (how its entries hash into the digest, how its log decodes). */
  dataset: Dataset<V>;
  /** A fresh, empty source and a writer that changes it the way production writers do. */
  create(): Promise<{
    source: SnapshotSource<V>;
    set: (key: string, value: V) => Promise<void>;
    /** Absent where the dataset has no deletes (revocations only expire). */
    delete?: (key: string) => Promise<void>;
    /** Where a write may replace an entry's value (the blacklist's SET NX never does). */
    overwrites: boolean;
    /** The source restarted with nothing (a Redis without persistence, a restored database). */
    reset: () => Promise<void>;
  }>;
  /** The i-th sample entry; keys are distinct, except that sample(501) has sample(500)'s key. */
  sample(i: number): [string, V];
  teardown(): Promise<void>;
}

async function snapshot<V>(
  source: SnapshotSource<V>,
): Promise<{ result: SnapshotResult; version: number; entries: Map<string, V> }> {
  const entries = new Map<string, V>();
  const result = await source.load((k, v) => entries.set(k, v));
  return { result, version: result.version, entries };
}

/** The digest a replica computes of `entries` (buckets >= fromBucket). */
function digestOf<V>(dataset: Dataset<V>, source: SnapshotSource<V>, entries: Map<string, V>, from: number) {
  const hasher = EntryHasher.for(dataset, source.digestAlgorithm)!;
  const digest = new Digest();
  for (const [k, v] of entries) {
    const d = hasher.delta(k, v);
    digest.xor(d.bucket, d.hi, d.lo);
  }
  return digest.combined(dataset.expireAt ? from : -Infinity);
}

/** What a replica needs of every snapshot source. */
export function sourceConformance<V>(name: string, harness: SourceHarness<V>): void {
  describe(`SnapshotSource conformance: ${name}`, () => {
    after(() => harness.teardown());

    it('an empty source loads nothing at version 0', async () => {
      const { source } = await harness.create();
      const snap = await snapshot(source);
      assert.equal(snap.version, 0);
      assert.equal(snap.entries.size, 0);
      assert.equal(await source.version(), 0);
    });

    it('every write bumps the version by exactly one and the snapshot holds every entry', async () => {
      const { source, set, delete: del } = await harness.create();
      const samples = Array.from({ length: 25 }, (_, i) => harness.sample(i));
      for (const [k, v] of samples) await set(k, v);
      if (del) await del(samples[0]![0]);
      const kept = del ? samples.slice(1) : samples;
      const snap = await snapshot(source);
      assert.equal(snap.version, del ? 26 : 25);
      assert.equal(await source.version(), snap.version);
      assert.equal(snap.entries.size, kept.length);
      for (const [k, v] of kept) assert.deepEqual(snap.entries.get(k), v);
      if (del) assert.equal(snap.entries.has(samples[0]![0]), false);
    });

    it('overwriting an entry keeps one entry with the new value (where writes overwrite)', async () => {
      const { source, set, overwrites } = await harness.create();
      const [k, v1] = harness.sample(500);
      const [k2, v2] = harness.sample(501);
      assert.equal(k2, k);
      assert.notDeepEqual(v2, v1);
      await set(k, v1);
      await set(k, v2);
      const snap = await snapshot(source);
      assert.equal(snap.entries.size, 1);
      assert.deepEqual(snap.entries.get(k), overwrites ? v2 : v1);
      assert.equal(snap.version, overwrites ? 2 : 1);
    });

    it('get() reads one entry, undefined when absent', async () => {
      const { source, set } = await harness.create();
      const [k, v] = harness.sample(3);
      await set(k, v);
      const get = source.get?.bind(source);
      assert.ok(get, `${name} supports single reads`);
      assert.deepEqual(await get(k), v);
      assert.equal(await get(harness.sample(99)[0]), undefined);
    });

    it('loads a thousand entries', async () => {
      const { source, set } = await harness.create();
      const samples = Array.from({ length: 1000 }, (_, i) => harness.sample(1000 + i));
      await Promise.all(samples.map(([k, v]) => set(k, v)));
      const snap = await snapshot(source);
      assert.equal(snap.entries.size, 1000);
      assert.equal(snap.version, 1000);
    });

    it('keeps its digest equal to the digest of its entries through every write', async () => {
      const { source, set, delete: del } = await harness.create();
      assert.ok(source.state && source.digestAlgorithm, `${name} keeps a digest`);
      for (let i = 0; i < 30; i++) await set(...harness.sample(i));
      if (del) for (let i = 0; i < 5; i++) await del(harness.sample(i)[0]);
      await set(...harness.sample(500));
      await set(...harness.sample(501));
      const from = comparableFrom(Date.now());
      const snap = await snapshot(source);
      const state = await source.state(from);
      assert.equal(state.version, snap.version);
      assert.equal(state.digest, digestOf(harness.dataset, source, snap.entries, from));
      assert.notEqual(state.digest, '0000000000000000');
      // The snapshot carries the same digest, per bucket, for the replica to adopt.
      assert.equal(snap.result.digest?.atVersion, snap.version);
      const adopted = Digest.from(snap.result.digest.buckets);
      assert.equal(adopted.combined(harness.dataset.expireAt ? from : -Infinity), state.digest);
      assert.equal(snap.result.epoch, state.epoch);
    });

    it('keeps one epoch across writes and starts a new one when reset', async () => {
      const { source, set, reset } = await harness.create();
      await set(...harness.sample(1));
      const first = await source.state!(0);
      await set(...harness.sample(2));
      const second = await source.state!(0);
      assert.equal(second.epoch, first.epoch);
      assert.ok(first.epoch.length > 0, 'a source that was written to has an epoch');
      await reset();
      await set(...harness.sample(3));
      const after = await source.state!(0);
      assert.notEqual(after.epoch, first.epoch);
      assert.equal(after.version, 1);
    });

    it('changesSince() returns the changes after a version from its log, in order', async () => {
      const { source, set } = await harness.create();
      assert.ok(typeof source.changesSince === 'function', `${name} keeps a change log`);
      for (let i = 0; i < 5; i++) await set(...harness.sample(i));
      const { epoch } = await source.state!(0);
      const changes = await source.changesSince(epoch, 2, comparableFrom(Date.now()));
      assert.ok(changes, 'the log reaches back to version 3');
      assert.deepEqual(
        changes.changes.map((c) => c.version),
        [3, 4, 5],
      );
      const decoded = changes.changes.map((c) => harness.dataset.decode(c.event));
      for (const [i, change] of decoded.entries()) {
        const [key, value] = harness.sample(i + 2);
        assert.deepEqual(change, { kind: 'set', key, value });
      }
      assert.equal(changes.state?.version, 5);
      assert.deepEqual(await source.changesSince(epoch, 5, 0).then((c) => c?.changes), []);
      assert.equal(await source.changesSince('another-epoch', 2, 0), undefined);
    });
  });
}
