import pg from 'pg';
import { RabbitMQBus } from '../../amqp/rabbitmq-bus.ts';
import { intVar, loadCommonConfig, matchQueueType } from '../../config/env.ts';
import type { QueueType } from '../../amqp/queue-type.ts';
import type { Character } from '../../datasets/catalog.ts';
import { connectRedis } from '../../redis/client.ts';
import { migrate } from '../../db/migrate.ts';
import { CachecastError, describeError } from '../../errors.ts';
import { AdminServer } from '../../observe/admin-server.ts';
import type { Logger } from '../../logger.ts';
import { createLogger } from '../../logger.ts';
import { createMetricsRegistry } from '../../observe/metrics.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import { catalogReplica } from '../catalog-replica.ts';
import { warnIfEventsUnsigned } from '../event-signing.ts';
import type { RunningService, ServiceStarter } from '../service.ts';
import { openService } from '../open-service.ts';
import { MatchWorker } from './worker.ts';

/** The environment the match worker reads (CONTRACT.md), validated. */
export interface MatchWorkerConfig {
  adminPort: number;
  host: string;
  concurrency: number;
  prefetch: number;
  resultExpiresSec: number;
  queueType: QueueType;
  deliveryLimit: number;
}

export function loadMatchWorkerConfig(env: NodeJS.ProcessEnv): MatchWorkerConfig {
  const concurrency = intVar(env, 'MATCH_CONCURRENCY', 4, 1, 1024);
  const prefetch = intVar(env, 'MATCH_PREFETCH', 16, 1, 65_535);
  if (prefetch < concurrency) {
    throw new CachecastError(
      'CONFIG_INVALID',
      `MATCH_PREFETCH (${prefetch}) must be at least MATCH_CONCURRENCY (${concurrency})`,
    );
  }
  return {
    adminPort: intVar(env, 'ADMIN_PORT', 9004, 0, 65_535),
    host: env.HOST?.trim() || '0.0.0.0',
    concurrency,
    prefetch,
    resultExpiresSec: intVar(env, 'CELERY_RESULT_EXPIRES', 86_400, 0, 2_147_483_647),
    queueType: matchQueueType(env),
    deliveryLimit: intVar(env, 'MATCH_DELIVERY_LIMIT', 20, 1, 1_000_000),
  };
}

/** The running match worker, with its parts exposed for tests and the dashboard. */
export interface MatchWorkerService extends RunningService {
  readonly worker: MatchWorker;
  readonly replica: ReplicatedCache<Character>;
  readonly admin: AdminServer;
  /** Resolves once the replica has synced and the consumer is attached (never rejects). */
  readonly consuming: Promise<void>;
}

/**
 * `cachecast serve match-worker`. Returns once the admin port listens: /readyz
 * answers 503 while the catalog replica loads, and the worker consumes only
 * once it has (then readiness = replica can serve AND consumer attached).
 */
export async function startMatchWorkerService(env: NodeJS.ProcessEnv): Promise<MatchWorkerService> {
  const config = loadCommonConfig(env);
  const own = loadMatchWorkerConfig(env);
  const logger: Logger = createLogger({ level: config.logLevel, name: 'match-worker' });
  warnIfEventsUnsigned(config, logger);

  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 4 });
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection failed'));
  // Closed in reverse: stop consuming and finish tasks, then the replica, bus, Redis, pool, admin.
  let closing = false;
  return openService(logger, async (parts) => {
    parts.add('database pool', () => pool.end());
    await migrate(pool);
    // No offline queue: while Redis is away a result write fails at once and
    // the task is requeued, instead of piling up in memory.
    const managedRedis = connectRedis(config.redis, logger, 'cachecast-match-worker');
    const redis = managedRedis.client;
    const redisConnected = managedRedis.connected;
    parts.add('redis', () => managedRedis.close());
    const bus = new RabbitMQBus({ url: config.rabbitmqUrl, eventQueueType: config.eventQueueType, logger });
    parts.add('bus', () => bus.close());
    const replica = catalogReplica(pool, bus, config, logger);
    parts.add('replica', () => replica.close());

    const replicas = () => [replica as ReplicatedCache<unknown>];
    const registry = createMetricsRegistry(replicas);
    const worker = new MatchWorker({
      connection: config.rabbitmqUrl,
      redis,
      replica,
      logger,
      registry,
      concurrency: own.concurrency,
      prefetch: own.prefetch,
      resultExpiresSec: own.resultExpiresSec,
      queueType: own.queueType,
      deliveryLimit: own.deliveryLimit,
    });
    parts.add('worker', () => worker.close());
    const admin = new AdminServer({
      replicas,
      registry,
      ready: () => worker.consuming,
      token: config.adminPortToken,
      privateRoutes: { '/worker': () => worker.stats },
    });
    parts.addOuter('admin server', () => admin.close());
    const boundAdmin = await admin.listen(own.adminPort, own.host);

    // In the background: the replica loads (retrying while PostgreSQL or the
    // broker is away) and Redis connects, then the worker attaches its consumer.
    const consuming = (async () => {
      await Promise.all([replica.start(), redisConnected]);
      await worker.start();
      if (worker.consuming) logger.info({ adminPort: boundAdmin }, 'match worker ready');
    })().catch((err: unknown) => {
      // A close() before the first sync, or a Redis that refused us for good.
      if (closing) return;
      logger.error({ err: describeError(err) }, 'match worker did not start consuming');
    });

    logger.info(
      { adminPort: boundAdmin, concurrency: own.concurrency, prefetch: own.prefetch },
      'match worker started; consuming once the catalog replica has synced',
    );
    return {
      service: {
        name: 'match-worker',
        endpoints: { admin: `http://${own.host}:${boundAdmin}` },
        worker,
        replica,
        admin,
        consuming,
      },
      onClose: () => {
        closing = true;
      },
    };
  });
}

/** `cachecast serve match-worker` (wired by the CLI). */
export const startMatchWorker: ServiceStarter = startMatchWorkerService;
