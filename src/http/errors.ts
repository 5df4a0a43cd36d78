import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { isCachecastError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** Every HTTP error body: a stable code clients switch on, and a human message. */
export interface ErrorBody {
  error: string;
  message?: string;
  [detail: string]: unknown;
}

/** The first problem zod found, as `path: message` (`body` for the whole body): one line for a 400. */
export function firstIssue(error: {
  issues: ReadonlyArray<{ path: PropertyKey[]; message: string }>;
}): string {
  const issue = error.issues[0];
  return issue ? `${issue.path.map(String).join('.') || 'body'}: ${issue.message}` : 'invalid';
}

export function sendError(reply: FastifyReply, status: number, error: string, message?: string, extra = {}) {
  return reply.code(status).send({ error, ...(message ? { message } : {}), ...extra } satisfies ErrorBody);
}

/** Fastify's own errors (bad JSON, body too large, ...) mapped to stable codes, in one place. */
const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'body_too_large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_content_length'],
};

export function installErrorHandlers(app: FastifyInstance, logger: Logger): void {
  app.setNotFoundHandler((_req, reply) => sendError(reply, 404, 'not_found'));
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const mapped = err.code ? FASTIFY_CODES[err.code] : undefined;
    if (mapped) return sendError(reply, mapped[0], mapped[1], err.message);
    if (err instanceof SyntaxError) return sendError(reply, 400, 'invalid_json', err.message);
    if (isCachecastError(err, 'REPLICA_UNAVAILABLE')) return sendError(reply, 503, 'replica_unavailable');
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, err.statusCode, 'bad_request', err.message);
    }
    logger.error({ err: err.message, code: err.code }, 'request failed');
    return sendError(reply, 500, 'internal');
  });
}
