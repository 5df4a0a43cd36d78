import type { Bus } from '../bus/bus.ts';
import type { CommonConfig } from '../config/env.ts';
import { blacklistDataset } from '../datasets/blacklist.ts';
import type { Logger } from '../logger.ts';
import { ReplicatedCache } from '../replica/replicated-cache.ts';
import { blacklistSource } from '../sources/blacklist-source.ts';
import type { RedisClient } from '../redis/client.ts';

/** The JWT revocation list every ext-authz instance holds: loaded from Redis, kept by events. */
export function blacklistReplica(
  redis: RedisClient,
  bus: Bus,
  config: Pick<CommonConfig, 'eventSecret'>,
  logger: Logger,
): ReplicatedCache<number> {
  return new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus,
    source: blacklistSource(redis),
    logger,
    eventSecret: config.eventSecret,
  });
}
