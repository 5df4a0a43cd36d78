import { jwtFromEnv } from '../../auth/jwt/from-env.ts';
import { createIssuer } from '../../auth/jwt/issuer.ts';
import { RabbitMQBus } from '../../amqp/rabbitmq-bus.ts';
import { choiceVar, intVar, loadCommonConfig } from '../../config/env.ts';
import { AdminServer } from '../../observe/admin-server.ts';
import { createLogger } from '../../logger.ts';
import { createMetricsRegistry } from '../../observe/metrics.ts';
import { connectRedis } from '../../redis/client.ts';
import { warnIfEventsUnsigned } from '../event-signing.ts';
import type { ServiceStarter } from '../service.ts';
import { openService } from '../open-service.ts';
import { buildAuthApp } from './app.ts';
import { Revocations } from './revocation-writer.ts';
import { BLACKLIST_TOPIC, blacklistDataset } from '../../datasets/blacklist.ts';
import { HeartbeatPublisher } from '../../outbox/heartbeats.ts';
import { blacklistSource } from '../../sources/blacklist-source.ts';

/** `cachecast serve auth`: the development login and the logout that revokes everywhere. */
export const startAuth: ServiceStarter = async (env) => {
  const config = loadCommonConfig(env);
  const port = intVar(env, 'PORT', 8001, 0, 65_535);
  const adminPort = intVar(env, 'ADMIN_PORT', 9001, 0, 65_535);
  const host = env.HOST?.trim() || '0.0.0.0';
  // A logout answers 204 only once this many Redis replicas hold it (WAIT): see docs/operations.md.
  const minReplicasAck = intVar(env, 'REDIS_MIN_REPLICAS_ACK', 0, 0, 64);
  const replicasAckTimeoutMs = intVar(env, 'REDIS_REPLICAS_ACK_TIMEOUT_MS', 1000, 1, 60_000);
  // Deployments whose tokens come from their own identity provider turn the issuer off.
  const login = choiceVar(env, 'AUTH_LOGIN', ['enabled', 'disabled'] as const, 'enabled');
  const logger = createLogger({ level: config.logLevel, name: 'auth' });
  const { jwt, verifier } = jwtFromEnv(env, logger);
  warnIfEventsUnsigned(config, logger);
  if (login === 'enabled' && !jwt.secretIsDevelopment) {
    logger.warn(
      {},
      'AUTH_LOGIN is enabled: anyone can get a token for any user_id; set AUTH_LOGIN=disabled when tokens come from your identity provider',
    );
  }
  return openService(logger, async (parts) => {
    const redis = connectRedis(config.redis, logger, 'cachecast-auth');
    parts.add('redis', () => redis.close());
    const bus = new RabbitMQBus({ url: config.rabbitmqUrl, eventQueueType: config.eventQueueType, logger });
    parts.add('bus', () => bus.close());
    parts.add('verifier', () => verifier.close());
    const revocations = new Revocations({
      redis: redis.client,
      bus,
      logger,
      eventSecret: config.eventSecret,
      // ext-authz accepts a token until exp + JWT_CLOCK_SKEW_S: the revocation must outlast that.
      holdAfterExpiryS: jwt.clockSkewS + 1,
      minReplicasAck,
      replicasAckTimeoutMs,
    });
    parts.add('revocations', () => revocations.close());
    // The blacklist's state on the fanout several times a second: replicas prove they are current,
    // and a revocation another instance could not publish is published from here.
    const source = blacklistSource(redis.client);
    const heartbeats = new HeartbeatPublisher({
      bus,
      topic: BLACKLIST_TOPIC,
      dataset: blacklistDataset.name,
      read: (fromBucket) => source.state(fromBucket),
      expiring: true,
      onPending: () => revocations.drainSoon(),
      logger,
      eventSecret: config.eventSecret,
    });
    parts.add('heartbeats', () => heartbeats.close());
    const issuer =
      login === 'enabled'
        ? createIssuer({
            secret: jwt.secret,
            issuer: jwt.issuer,
            audience: jwt.audience,
            ttlS: jwt.accessTokenTtlS,
          })
        : undefined;
    const app = buildAuthApp({ issuer, verifier, revocations, logger });
    parts.add('http server', () => app.close());

    let listening = false;
    const admin = new AdminServer({
      replicas: () => [],
      registry: createMetricsRegistry(() => []),
      ready: () => listening && redis.client.isReady,
      token: config.adminPortToken,
      privateRoutes: {
        '/revocations': async () => ({
          ...revocations.stats,
          pending: await revocations.pendingCount(),
          heartbeats: heartbeats.stats,
        }),
      },
    });
    parts.addOuter('admin server', () => admin.close());
    const boundAdmin = await admin.listen(adminPort, host);
    await verifier.start();
    await redis.connected;
    revocations.start();
    heartbeats.start();
    await app.listen({ port, host });
    listening = true;
    const bound = (app.server.address() as { port: number }).port;
    logger.info({ port: bound, adminPort: boundAdmin, login }, 'auth service ready');
    return {
      service: {
        name: 'auth',
        endpoints: { http: `http://${host}:${bound}`, admin: `http://${host}:${boundAdmin}` },
      },
      onClose: () => {
        listening = false;
      },
    };
  });
};
