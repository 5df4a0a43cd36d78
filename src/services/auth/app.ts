import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { TokenIssuer } from '../../auth/jwt/issuer.ts';
import type { TokenVerifier } from '../../auth/jwt/verifier.ts';
import { INVALID_TOKEN_CHALLENGE } from '../../auth/jwt/bearer.ts';
import { extractBearer } from '../../auth/jwt/verifier.ts';
import { describeError } from '../../errors.ts';
import { drainOnClose } from '../../http/drain.ts';
import { firstIssue, installErrorHandlers, sendError } from '../../http/errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import type { Revocations } from './revocation-writer.ts';

export interface AuthAppOptions {
  /** The development issuer; undefined when AUTH_LOGIN=disabled. */
  issuer: TokenIssuer | undefined;
  verifier: TokenVerifier;
  revocations: Revocations;
  logger?: Logger;
}

const loginBody = z.strictObject({
  // Printable, no whitespace: it becomes the `sub` claim and the x-user-id header.
  user_id: z
    .string()
    .min(1)
    .max(256)
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
});

/**
 * auth (CONTRACT.md): a development login and the logout that revokes a token
 * everywhere (seed 001).
 */
export function buildAuthApp(options: AuthAppOptions): FastifyInstance {
  const logger = options.logger ?? silentLogger;
  const app = Fastify({ logger: false, bodyLimit: 16 * 1024 });
  installErrorHandlers(app, logger);
  drainOnClose(app);

  app.post('/api/v1/auth/login', async (req, reply) => {
    if (!options.issuer) {
      return sendError(reply, 404, 'login_disabled', 'tokens come from the identity provider');
    }
    const parsed = loginBody.safeParse(req.body);
    if (!parsed.success) return sendError(reply, 400, 'invalid_body', firstIssue(parsed.error));
    const { token, expiresIn } = options.issuer.issue(parsed.data.user_id);
    return reply.send({ access_token: token, token_type: 'Bearer', expires_in: expiresIn });
  });

  app.post('/api/v1/auth/logout', async (req, reply) => {
    const bearer = extractBearer(req.headers.authorization);
    const result = 'error' in bearer ? bearer : options.verifier.verify(bearer.token);
    if ('error' in result) {
      reply.header('www-authenticate', INVALID_TOKEN_CHALLENGE);
      return sendError(reply, 401, result.error);
    }
    const { jti, exp } = result.claims;
    try {
      await options.revocations.revoke(jti, exp);
    } catch (err) {
      // Redis did not commit (nothing changed), or too few replicas confirmed it in time
      // (a failover could still lose it): either way the client should retry.
      logger.warn({ err: describeError(err) }, 'logout failed: revocation not written or not replicated');
      return sendError(reply, 503, 'revocation_unavailable', 'the revocation store is unavailable; retry');
    }
    return reply.code(204).send();
  });

  return app;
}
