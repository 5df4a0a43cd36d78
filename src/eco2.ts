// `cachecast/eco2`: the Eco2 application built on the library core
// (`cachecast`, src/index.ts): its two datasets, their sources of truth and
// key names, and its cache-aside keys. A third application would have its own
// module like this one and leave the core untouched.
export {
  catalogDataset,
  characterSchema,
  CATALOG_DATASET,
  CATALOG_TOPIC,
  CHARACTER_COLUMNS,
} from './datasets/catalog.ts';
export type { Character } from './datasets/catalog.ts';
export {
  blacklistDataset,
  BLACKLIST_TOPIC,
  BLACKLIST_KEY_PREFIX,
  BLACKLIST_KEYS,
  BLACKLIST_VERSION_KEY,
  blacklistKeys,
  blacklistExpireAtMs,
  toBlacklistValue,
} from './datasets/blacklist.ts';
export type { BlacklistKeys } from './datasets/blacklist.ts';

export { catalogSource } from './sources/catalog-source.ts';
export { blacklistSource } from './sources/blacklist-source.ts';

export { CacheKey } from './services/cache-keys.ts';
