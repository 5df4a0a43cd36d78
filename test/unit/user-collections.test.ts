import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { joinGrants } from '../../src/services/catalog/user-collections.ts';
import { character } from '../support/replica-fixtures.ts';

const catalog = (...cs: Character[]) => new Map(cs.map((c) => [c.id, c]));

describe('joinGrants (cached grants joined with the catalog at read time)', () => {
  it('orders by acquired_at, then by code, as the SQL does', () => {
    const [a, b, c] = [character('a'), character('b'), character('c')];
    const joined = joinGrants(
      [
        { character_id: c.id, acquired_at: '2026-01-01T00:00:00.000Z' },
        { character_id: b.id, acquired_at: '2026-01-02T00:00:00.000Z' },
        { character_id: a.id, acquired_at: '2026-01-01T00:00:00.000Z' },
      ],
      catalog(a, b, c),
    );
    assert.deepEqual(
      joined.map((x) => [x.code, x.acquired_at]),
      [
        ['a', '2026-01-01T00:00:00.000Z'],
        ['c', '2026-01-01T00:00:00.000Z'],
        ['b', '2026-01-02T00:00:00.000Z'],
      ],
    );
  });

  it('shows the catalog as it is now: edited details, deleted characters left out', () => {
    const a = character('a');
    const grants = [
      { character_id: a.id, acquired_at: '2026-01-01T00:00:00.000Z' },
      { character_id: 'id-gone', acquired_at: '2026-01-02T00:00:00.000Z' },
    ];
    const edited = { ...a, name: 'Edited' };
    assert.deepEqual(joinGrants(grants, catalog(edited)), [
      { ...edited, acquired_at: '2026-01-01T00:00:00.000Z' },
    ]);
  });

  it('returns copies: a caller editing its answer does not edit the catalog', () => {
    const a = character('a');
    const cat = catalog(a);
    const [got] = joinGrants([{ character_id: a.id, acquired_at: '2026-01-01T00:00:00.000Z' }], cat);
    got!.name = 'changed by a caller';
    assert.equal(cat.get(a.id)!.name, 'Name a');
  });
});
