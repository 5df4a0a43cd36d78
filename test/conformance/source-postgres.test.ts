import { randomUUID } from 'node:crypto';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import type { TestDatabase } from '../support/env.ts';
import { testDatabase } from '../support/env.ts';
import { deleteCharacter, upsertCharacter } from '../support/catalog-writes.ts';
import { sourceConformance } from './source.conformance.ts';

const databases: TestDatabase[] = [];
const ids = new Map<number, string>();
const idFor = (i: number): string => {
  if (!ids.has(i)) ids.set(i, randomUUID());
  return ids.get(i)!;
};

sourceConformance<Character>('postgres (catalog)', {
  dataset: catalogDataset,
  async create() {
    const db = await testDatabase();
    databases.push(db);
    return {
      source: catalogSource(db.pool),
      set: async (_key, c) => void (await upsertCharacter(db.pool, c)),
      delete: async (key) => void (await deleteCharacter(db.pool, key)),
      overwrites: true,
      // A database restored empty: its versions row (and epoch) is gone with the rest.
      reset: async () => {
        await db.pool.query('TRUNCATE characters, cachecast_outbox');
        await db.pool.query('DELETE FROM cachecast_versions');
      },
    };
  },
  sample: (i) => {
    const id = idFor(i === 501 ? 500 : i);
    return [
      id,
      {
        id,
        code: `code-${i}`,
        name: `Name ${i}`,
        match_label: `label-${i}`,
        type_label: null,
        dialog: 'hi',
        is_default: false,
      },
    ];
  },
  teardown: async () => {
    await Promise.all(databases.map((d) => d.drop()));
  },
});
