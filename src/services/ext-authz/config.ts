import { choiceVar, intVar } from '../../config/env.ts';
import type { UnknownRevocationPolicy } from './authorizer.ts';

export interface ExtAuthzConfig {
  port: number;
  adminPort: number;
  grpcPort: number;
  host: string;
  /** AUTHZ_BLACKLIST: where revocations are looked up. */
  blacklist: 'replica' | 'redis';
  /** AUTHZ_UNKNOWN_REVOCATION: when neither the replica nor Redis can answer. */
  unknownRevocation: UnknownRevocationPolicy;
  /** AUTHZ_REDIS_TIMEOUT_MS: a Redis lookup slower than this counts as Redis down. */
  redisTimeoutMs: number;
}

export function loadExtAuthzConfig(env: NodeJS.ProcessEnv): ExtAuthzConfig {
  return {
    port: intVar(env, 'PORT', 8002, 0, 65_535),
    adminPort: intVar(env, 'ADMIN_PORT', 9002, 0, 65_535),
    grpcPort: intVar(env, 'GRPC_PORT', 9191, 0, 65_535),
    host: env.HOST?.trim() || '0.0.0.0',
    blacklist: choiceVar(env, 'AUTHZ_BLACKLIST', ['replica', 'redis'] as const, 'replica'),
    unknownRevocation: choiceVar(env, 'AUTHZ_UNKNOWN_REVOCATION', ['refuse', 'allow'] as const, 'refuse'),
    redisTimeoutMs: intVar(env, 'AUTHZ_REDIS_TIMEOUT_MS', 50, 1, 10_000),
  };
}
