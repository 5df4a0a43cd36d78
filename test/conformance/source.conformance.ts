import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { SnapshotSource } from '../../src/replica/source.ts';

export interface SourceHarness<V> {
  /** A fresh, empty source and a writer that changes it the way production writers do. */
  create(): Promise<{
    source: SnapshotSource<V>;
    set: (key: string, value: V) => Promise<void>;
    delete: (key: string) => Promise<void>;
  }>;
  /** The i-th sample entry; keys are distinct, except that sample(501) has sample(500)'s key. */
  sample(i: number): [string, V];
  teardown(): Promise<void>;
}

async function snapshot<V>(source: SnapshotSource<V>): Promise<{ version: number; entries: Map<string, V> }> {
  const entries = new Map<string, V>();
  const { version } = await source.load((k, v) => entries.set(k, v));
  return { version, entries };
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
      await del(samples[0]![0]);
      const snap = await snapshot(source);
      assert.equal(snap.version, 26);
      assert.equal(await source.version(), 26);
      assert.equal(snap.entries.size, 24);
      for (const [k, v] of samples.slice(1)) assert.deepEqual(snap.entries.get(k), v);
      assert.equal(snap.entries.has(samples[0]![0]), false);
    });

    it('overwriting an entry keeps one entry with the new value', async () => {
      const { source, set } = await harness.create();
      const [k, v1] = harness.sample(500);
      const [k2, v2] = harness.sample(501);
      assert.equal(k2, k);
      assert.notDeepEqual(v2, v1);
      await set(k, v1);
      await set(k, v2);
      const snap = await snapshot(source);
      assert.equal(snap.entries.size, 1);
      assert.deepEqual(snap.entries.get(k), v2);
      assert.equal(snap.version, 2);
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
  });
}
