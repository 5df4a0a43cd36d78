import { blacklistDataset, toBlacklistValue } from '../../src/datasets/blacklist.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import { character } from '../support/replica-fixtures.ts';
import { sourceConformance } from './source.conformance.ts';

const expiry = Math.floor(Date.now() / 1000) + 3600;

sourceConformance<number>('memory (blacklist)', {
  dataset: blacklistDataset,
  create: () => {
    const source = new MemorySource<number>({ dataset: blacklistDataset });
    return Promise.resolve({
      source,
      set: (k: string, v: number) => Promise.resolve(void source.set(k, v)),
      overwrites: true,
      reset: () => Promise.resolve(source.reset()),
    });
  },
  sample: (i) => [i === 501 ? 'jti-500' : `jti-${i}`, toBlacklistValue(expiry + (i === 501 ? 60 : 0))],
  teardown: () => Promise.resolve(),
});

sourceConformance<Character>('memory (catalog)', {
  dataset: catalogDataset,
  create: () => {
    const source = new MemorySource<Character>({ dataset: catalogDataset });
    return Promise.resolve({
      source,
      set: (k: string, v: Character) => Promise.resolve(void source.set(k, v)),
      delete: (k: string) => Promise.resolve(void source.delete(k)),
      overwrites: true,
      reset: () => Promise.resolve(source.reset()),
    });
  },
  sample: (i) => {
    const c = character(`c${i === 501 ? 500 : i}`, `label-${i}`);
    return [c.id, c];
  },
  teardown: () => Promise.resolve(),
});
