import { jwtFromEnv } from '../../auth/jwt/from-env.ts';
import { RabbitMQBus } from '../../amqp/rabbitmq-bus.ts';
import { loadCommonConfig } from '../../config/env.ts';
import { AdminServer } from '../../observe/admin-server.ts';
import { createLogger } from '../../logger.ts';
import { createMetricsRegistry } from '../../observe/metrics.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import { connectRedis } from '../../redis/client.ts';
import { blacklistReplica } from '../blacklist-replica.ts';
import { warnIfEventsUnsigned } from '../event-signing.ts';
import type { ServiceStarter } from '../service.ts';
import { openService } from '../open-service.ts';
import { Authorizer } from './authorizer.ts';
import { loadExtAuthzConfig } from './config.ts';
import { DecisionLog } from './decision.ts';
import { AuthzGrpcServer } from './grpc-server.ts';
import { AuthzHttpServer } from './http-server.ts';
import { registerAuthzMetrics } from './metrics.ts';
import type { RevocationList } from './revocation-check.ts';
import { RedisRevocationList, ReplicaRevocationList, redisLookup } from './revocation-check.ts';

/**
 * `cachecast serve ext-authz`: Envoy's and nginx's external authorization
 * (HTTP and gRPC), answering from a local replica of the JWT blacklist.
 */
export const startExtAuthz: ServiceStarter = async (env) => {
  const config = loadCommonConfig(env);
  const own = loadExtAuthzConfig(env);
  const logger = createLogger({ level: config.logLevel, name: 'ext-authz' });
  const { verifier } = jwtFromEnv(env, logger);
  // In redis mode it holds no replica and hears no event.
  if (own.blacklist === 'replica') warnIfEventsUnsigned(config, logger);
  return openService(logger, async (parts) => {
    const redis = connectRedis(config.redis, logger, 'cachecast-ext-authz');
    parts.add('redis', () => redis.close());
    parts.add('verifier', () => verifier.close());
    const lookup = redisLookup(redis.client, own.redisTimeoutMs);

    let replica: ReplicatedCache<number> | undefined;
    let revocations: RevocationList;
    if (own.blacklist === 'replica') {
      const bus = new RabbitMQBus({ url: config.rabbitmqUrl, eventQueueType: config.eventQueueType, logger });
      parts.add('bus', () => bus.close());
      replica = blacklistReplica(redis.client, bus, config, logger);
      parts.add('replica', () => replica!.close());
      revocations = new ReplicaRevocationList(replica, lookup);
    } else {
      revocations = new RedisRevocationList(lookup);
    }

    const replicas = () => (replica ? [replica as ReplicatedCache<unknown>] : []);
    const registry = createMetricsRegistry(replicas);
    const log = new DecisionLog();
    const authorizer = new Authorizer({
      verifier,
      revocations,
      unknownRevocation: own.unknownRevocation,
      log,
      latency: registerAuthzMetrics(registry, log),
    });
    const http = new AuthzHttpServer(authorizer);
    parts.add('http server', () => http.close());
    const grpc = new AuthzGrpcServer(authorizer);
    parts.add('grpc server', () => grpc.close());

    let listening = false;
    const admin = new AdminServer({
      replicas,
      registry,
      // In redis mode there is no replica: ready once Redis answers.
      ready: () => listening && (replica !== undefined || redis.client.isReady),
      token: config.adminPortToken,
      // Recent users and token ids, and the revocation policy: not for anyone who reaches the port.
      privateRoutes: {
        '/decisions': () => log.snapshot(),
        '/authz': () => ({
          blacklist: own.blacklist,
          unknown_revocation: own.unknownRevocation,
          verifier: verifier.stats(),
        }),
      },
    });
    parts.addOuter('admin server', () => admin.close());
    const adminPort = await admin.listen(own.adminPort, own.host);
    await verifier.start();
    if (replica) await replica.start();
    else await redis.connected;
    // Only a synced instance answers: an unsynced one would let revoked tokens through.
    const port = await http.listen(own.port, own.host);
    const grpcPort = await grpc.listen(own.grpcPort, own.host);
    listening = true;
    logger.info({ port, grpcPort, adminPort, blacklist: own.blacklist }, 'ext-authz ready');
    return {
      service: {
        name: 'ext-authz',
        endpoints: {
          http: `http://${own.host}:${port}`,
          grpc: `${own.host}:${grpcPort}`,
          admin: `http://${own.host}:${adminPort}`,
        },
      },
      onClose: () => {
        listening = false;
      },
    };
  });
};
