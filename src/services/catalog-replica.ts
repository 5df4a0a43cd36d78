import type pg from 'pg';
import type { Bus } from '../bus/bus.ts';
import type { CommonConfig } from '../config/env.ts';
import type { Character } from '../datasets/catalog.ts';
import { catalogDataset } from '../datasets/catalog.ts';
import type { Logger } from '../logger.ts';
import { ReplicatedCache } from '../replica/replicated-cache.ts';
import { catalogSource } from '../sources/catalog-source.ts';

/** The catalog replica every service that reads the catalog holds (catalog API, match worker). */
export function catalogReplica(
  pool: pg.Pool,
  bus: Bus,
  config: Pick<CommonConfig, 'eventSecret'>,
  logger: Logger,
): ReplicatedCache<Character> {
  return new ReplicatedCache<Character>({
    dataset: catalogDataset,
    bus,
    source: catalogSource(pool),
    logger,
    eventSecret: config.eventSecret,
  });
}
