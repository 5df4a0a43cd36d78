import { MemorySource } from '../../src/sources/memory-source.ts';
import { sourceConformance } from './source.conformance.ts';

sourceConformance<string>('memory', {
  create: () => {
    const source = new MemorySource<string>();
    return Promise.resolve({
      source,
      set: (k: string, v: string) => Promise.resolve(void source.set(k, v)),
      delete: (k: string) => Promise.resolve(void source.delete(k)),
    });
  },
  sample: (i) => [`key-${i === 501 ? 500 : i}`, `value-${i}`],
  teardown: () => Promise.resolve(),
});
