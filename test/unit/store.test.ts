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
      for (const [key, row] of store.entries()) {
        const term = fn(row);
        if (term === undefined) continue;
        if (!expected.has(term)) expected.set(term, new Set());
        expected.get(term)!.add(key);
      }
      const actual = new Map(
        store.indexTerms(name).map((term) => [term, new Set(store.byIndex(name, term))]),
      );
      assert.deepEqual(actual, expected, `index ${name}`);
    }
  });

  it('drops empty index buckets and leaves unindexed values out', () => {
    const store = new Store(dataset);
    store.set('a', { label: 'x', group: 'g' });
    store.set('a', { group: 'g' });
    assert.deepEqual(store.indexTerms('label'), []);
    assert.deepEqual([...store.byIndex('group', 'g')!], ['a']);
    assert.deepEqual(store.delete('a'), { group: 'g' });
    assert.equal(store.delete('a'), undefined);
    assert.deepEqual(store.indexTerms('group'), []);
  });

  it('replace() empties entries and indexes before filling them', () => {
    const store = new Store(dataset);
    store.set('a', { label: 'x', group: 'g' });
    store.replace([['b', { label: 'y', group: 'h' }]]);
    assert.deepEqual([...store.entries()], [['b', { label: 'y', group: 'h' }]]);
    assert.deepEqual(store.indexTerms('label'), ['y']);
    assert.deepEqual(store.indexTerms('group'), ['h']);
  });
});
