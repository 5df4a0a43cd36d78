import type { Logger } from '../../logger.ts';
import type { JwtConfig } from './config.ts';
import { loadJwtConfig } from './config.ts';
import type { TokenVerifier } from './verifier.ts';
import { createVerifier } from './verifier.ts';

/**
 * The JWT settings and verifier auth and ext-authz share, read once from the
 * environment; warns when the development secret is in use.
 */
export function jwtFromEnv(
  env: NodeJS.ProcessEnv,
  logger: Logger,
): { jwt: JwtConfig; verifier: TokenVerifier } {
  const jwt = loadJwtConfig(env);
  if (jwt.secretIsDevelopment) {
    logger.warn({}, 'JWT_SECRET is not set: using the development secret, never do this in production');
  }
  const verifier = createVerifier({
    issuer: jwt.issuer,
    audience: jwt.audience,
    algorithms: jwt.algorithms,
    secret: jwt.secret,
    ...(jwt.jwksUrl ? { jwksUrl: jwt.jwksUrl } : {}),
    clockSkewS: jwt.clockSkewS,
    logger,
  });
  return { jwt, verifier };
}
