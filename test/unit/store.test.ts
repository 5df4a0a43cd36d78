import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Dataset } from '../../src/replica/dataset.ts';
import { Store } from '../../src/replica/store.ts';

interface Row {
  label?: string;
  group: string;
}

const dataset: Dataset<Row> = {
  name: 'rows',
  topic: 'rows',
  decode: () => {
    throw new Error('unused');
  },
  indexes: { label: (r) => r.label, group: (r) => r.group },
};

describe('Store', () => {
  it('keeps every index equal to a rebuild from the entries after random operations', () => {
    const store = new Store(dataset);
    let seed = 42;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 5000; i++) {
      const key = `k${random(200)}`;
      if (random(3) === 0) store.delete(key);
      else store.set(key, { label: random(4) === 0 ? undefined : `l${random(20)}`, group: `g${random(5)}` });
    }
    for (const [name, fn] of Object.entries(dataset.indexes!)) {
      const expected = new Map<string, Set<string>>();
      for (const [key, row] of store.entries) {
        const term = fn(row);
        if (term === undefined) continue;
        if (!expected.has(term)) expected.set(term, new Set());
        expected.get(term)!.add(key);
      }
      assert.deepEqual(store.indexes.get(name), expected, `index ${name}`);
    }
  });

  it('drops empty index buckets and leaves unindexed values out', () => {
    const store = new Store(dataset);
    store.set('a', { label: 'x', group: 'g' });
    store.set('a', { group: 'g' });
    assert.equal(store.indexes.get('label')!.size, 0);
    assert.deepEqual([...store.indexes.get('group')!.get('g')!], ['a']);
    assert.equal(store.delete('a'), true);
    assert.equal(store.delete('a'), false);
    assert.equal(store.indexes.get('group')!.size, 0);
  });
});
