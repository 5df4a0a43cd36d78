import { hostname } from 'node:os';
import pg from 'pg';
import { openAmqpConnection } from '../../amqp/connection.ts';
import { jwtFromEnv } from '../../auth/jwt/from-env.ts';
import { RabbitMQBus } from '../../amqp/rabbitmq-bus.ts';
import { CacheAside } from '../../cache-aside/cache-aside.ts';
import { registerCacheAsideMetrics } from '../../cache-aside/metrics.ts';
import { loadCacheAsideConfig } from '../../cache-aside/options.ts';
import { CatalogRepository } from '../../catalog/repository.ts';
import { CATALOG_TOPIC, catalogDataset } from '../../datasets/catalog.ts';
import { intVar, loadCommonConfig, matchQueueType, secretVar } from '../../config/env.ts';
import { migrate } from '../../db/migrate.ts';
import { AdminServer } from '../../observe/admin-server.ts';
import { createLogger } from '../../logger.ts';
import { createMetricsRegistry } from '../../observe/metrics.ts';
import { registerOutboxMetrics } from '../../outbox/metrics.ts';
import { HeartbeatPublisher } from '../../outbox/heartbeats.ts';
import { OutboxRelay } from '../../outbox/relay.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import { catalogSource } from '../../sources/catalog-source.ts';
import { catalogReplica } from '../catalog-replica.ts';
import { warnIfEventsUnsigned } from '../event-signing.ts';
import type { ServiceStarter } from '../service.ts';
import { openService } from '../open-service.ts';
import { buildCatalogApp } from './app.ts';
import { GrantsWriter } from './grants-writer.ts';
import { UserCollections } from './user-collections.ts';

/**
 * `cachecast serve catalog`: the catalog API, its replica, the outbox relay, the
 * grants writer, and the cache-aside service for users' collections.
 */
export const startCatalog: ServiceStarter = async (env) => {
  const config = loadCommonConfig(env);
  const port = intVar(env, 'PORT', 8003, 0, 65_535);
  const adminPort = intVar(env, 'ADMIN_PORT', 9003, 0, 65_535);
  const host = env.HOST?.trim() || '0.0.0.0';
  const adminToken = secretVar(env, 'ADMIN_TOKEN', 16);
  const cacheConfig = loadCacheAsideConfig(env);
  const queueType = matchQueueType(env);
  const logger = createLogger({ level: config.logLevel, name: 'catalog' });
  if (!adminToken) logger.warn({}, 'ADMIN_TOKEN is not set: the admin API refuses every call');
  // Users' collections answer only their owner: the caller's token is verified as ext-authz does.
  const { verifier } = jwtFromEnv(env, logger);
  warnIfEventsUnsigned(config, logger);

  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection failed'));
  return openService(logger, async (parts) => {
    parts.add('database pool', () => pool.end());
    parts.add('verifier', () => verifier.close());
    await migrate(pool);
    const bus = new RabbitMQBus({ url: config.rabbitmqUrl, eventQueueType: config.eventQueueType, logger });
    parts.add('bus', () => bus.close());
    const amqp = openAmqpConnection({ url: config.rabbitmqUrl, name: 'cachecast catalog grants' });
    amqp.on('error', (err: unknown) => logger.warn({ err: String(err) }, 'grants connection error'));
    parts.add('grants connection', () => amqp.close());

    const replica = catalogReplica(pool, bus, config, logger);
    parts.add('replica', () => replica.close());
    const relay = new OutboxRelay({ pool, bus, logger, eventSecret: config.eventSecret });
    parts.add('outbox relay', () => relay.close());
    // The catalog's state on the fanout several times a second: replicas prove they are current.
    const source = catalogSource(pool);
    const heartbeats = new HeartbeatPublisher({
      bus,
      topic: CATALOG_TOPIC,
      dataset: catalogDataset.name,
      read: () => source.state(),
      expiring: false,
      onPending: () => relay.kick(),
      logger,
      eventSecret: config.eventSecret,
    });
    parts.add('heartbeats', () => heartbeats.close());
    // Users' collections through the cache-aside service (seed 003). Closed after
    // the HTTP server and the grants writer (whose commits invalidate), so
    // it drains their last write-backs and invalidations.
    const cache = new CacheAside({
      redisUrl: config.redis.url,
      redisSentinels: config.redis.sentinels,
      redisSentinelName: config.redis.sentinelName,
      commandTimeoutMs: cacheConfig.commandTimeoutMs,
      breaker: cacheConfig.breaker,
      alerts: {
        webhookUrl: cacheConfig.slackWebhookUrl,
        webhookTimeoutMs: cacheConfig.slackTimeoutMs,
        cooldownMs: cacheConfig.alertCooldownMs,
        source: `catalog@${hostname()}`,
      },
      logger,
    });
    parts.add('cache', () => cache.close());
    const collections = new UserCollections(cache, pool, replica);
    const grants = new GrantsWriter({
      connection: amqp,
      pool,
      logger,
      onCommitted: (userIds) => collections.invalidate(userIds),
      queueType,
    });
    parts.add('grants writer', () => grants.close());
    const repository = new CatalogRepository(pool);
    const app = buildCatalogApp({ replica, repository, adminToken, logger, collections, verifier });
    parts.add('http server', () => app.close());

    const replicas = () => [replica as ReplicatedCache<unknown>];
    let listening = false;
    const registry = createMetricsRegistry(replicas);
    registerCacheAsideMetrics(registry, cache);
    registerOutboxMetrics(registry, relay);
    const admin = new AdminServer({
      replicas,
      registry,
      ready: () => listening,
      routes: { '/cache': () => cache.stats() },
      token: config.adminPortToken,
      privateRoutes: {
        '/outbox': () => ({ ...relay.stats, heartbeats: heartbeats.stats }),
        '/grants': () => grants.stats,
      },
    });
    parts.addOuter('admin server', () => admin.close());
    // Health first, so probes answer (not ready) while the replica loads.
    const boundAdmin = await admin.listen(adminPort, host);
    await verifier.start();
    await relay.start();
    heartbeats.start();
    await replica.start();
    await grants.start();
    await app.listen({ port, host });
    listening = true;
    const bound = (app.server.address() as { port: number }).port;
    logger.info(
      { port: bound, adminPort: boundAdmin, alerts: cacheConfig.slackWebhookUrl ? 'slack' : 'log' },
      'catalog service ready',
    );
    return {
      service: {
        name: 'catalog',
        endpoints: { http: `http://${host}:${bound}`, admin: `http://${host}:${boundAdmin}` },
      },
      onClose: () => {
        listening = false;
      },
    };
  });
};
