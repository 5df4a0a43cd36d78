import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { INVALID_TOKEN_CHALLENGE } from '../../auth/jwt/bearer.ts';
import type { TokenVerifier } from '../../auth/jwt/verifier.ts';
import type { CharacterInput } from '../../catalog/character-input.ts';
import { moreCsvErrors, parseCatalogCsv } from '../../catalog/csv.ts';
import type { CatalogRepository } from '../../catalog/repository.ts';
import type { Character } from '../../datasets/catalog.ts';
import { describeError, OptionTypeError } from '../../errors.ts';
import { bearerMatches } from '../../http/bearer.ts';
import { drainOnClose } from '../../http/drain.ts';
import { firstIssue, installErrorHandlers, sendError } from '../../http/errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import type { ReplicatedCache } from '../../replica/replicated-cache.ts';
import { identifyCaller } from './caller.ts';
import type { UserCollection } from './user-collections.ts';

export interface CatalogAppOptions {
  replica: ReplicatedCache<Character>;
  repository: CatalogRepository;
  /** ADMIN_TOKEN; when undefined the admin API refuses every call. */
  adminToken: string | undefined;
  logger?: Logger;
  /** JSON bodies. @default 65536 */
  maxJsonBytes?: number;
  /** CSV import bodies. @default 33554432 (32 MiB, ~300k rows) */
  maxCsvBytes?: number;
  /**
   * Users' collections (cache-aside, seed 003), each only for its owner: the
   * caller is the `sub` of a bearer token `verifier` accepts. Without both,
   * `/api/v1/users/...` is not served.
   */
  collections?: { get(userId: string): Promise<UserCollection> };
  /** The JWT verifier ext-authz uses (same settings), for the collections' callers. */
  verifier?: TokenVerifier;
}

const text = (max: number) => z.string().trim().min(1).max(max);
const optionalText = z
  .string()
  .max(10_000)
  .nullish()
  .transform((v) => (v === undefined || v === null || v.trim() === '' ? null : v.trim()));

const characterBody = z.strictObject({
  name: text(10_000),
  match_label: text(10_000),
  type_label: optionalText,
  dialog: optionalText,
  is_default: z.boolean().optional().default(false),
});

const classificationBody = z.object({
  major_category: z.string().max(1000).nullish(),
  middle_category: z.string().max(1000).nullish(),
  minor_category: z.string().max(1000).nullish(),
});

const codeParam = z.object({ code: z.string().trim().min(1).max(200) });

/** As the grants writer accepts them (1-200 characters), minus control characters and edge spaces. */
const userIdParam = z.object({
  user_id: z
    .string()
    .min(1, 'user_id is empty')
    .max(200, 'user_id is longer than 200 characters')
    .regex(/^[^\p{Cc}\p{Cs}]*$/u, 'user_id holds control characters')
    .refine((id) => id.trim() === id, 'user_id starts or ends with a space'),
});

/**
 * The catalog service's HTTP API (CONTRACT.md). Catalog reads come from the
 * local replica, with no database call; a user's collection (when enabled)
 * is read through the cache-aside tier: Redis, else PostgreSQL. Admin writes
 * go through the repository (row + outbox event in one transaction).
 */
export function buildCatalogApp(options: CatalogAppOptions): FastifyInstance {
  const { replica, repository } = options;
  const logger = options.logger ?? silentLogger;
  const app = Fastify({
    bodyLimit: options.maxJsonBytes ?? 65_536,
    logger: false,
    // Long codes reach the handler, which answers with a stable error code.
    routerOptions: { maxParamLength: 1024 },
    // Malformed URLs and the like get the same error shape as everything else.
    frameworkErrors: (err, _req, reply) => {
      void sendError(reply, 400, 'bad_request', err.message);
    },
  });
  installErrorHandlers(app, logger);
  drainOnClose(app);
  const maxCsvBytes = options.maxCsvBytes ?? 32 * 1024 * 1024;
  // Small JSON only (bodyLimit above), except the admin import: any other type is
  // answered 415 before a byte of its body is read.
  app.removeContentTypeParser('text/plain');

  app.get('/api/v1/characters/catalog', () =>
    replica.values().sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0)),
  );

  app.get('/api/v1/characters/default', (_req, reply) => {
    const character = replica.findOne('default', 'default');
    return character ?? sendError(reply, 404, 'no_default', 'the catalog has no default character');
  });

  app.post('/api/v1/characters/match', (req, reply) => {
    const parsed = classificationBody.safeParse(req.body);
    if (!parsed.success) return sendError(reply, 400, 'invalid_body', firstIssue(parsed.error));
    const label = parsed.data.middle_category;
    return { character: label ? (replica.findOne('match_label', label) ?? null) : null };
  });

  const { collections, verifier } = options;
  if (collections && !verifier) {
    throw new OptionTypeError('collections need a verifier: a collection is only for its owner');
  }
  if (collections && verifier) {
    app.get('/api/v1/users/:user_id/characters', async (req, reply) => {
      const caller = identifyCaller(req.headers, verifier);
      if (!caller.ok) {
        reply.header('www-authenticate', INVALID_TOKEN_CHALLENGE);
        return sendError(reply, 401, caller.error);
      }
      const param = userIdParam.safeParse(req.params);
      if (!param.success) return sendError(reply, 400, 'invalid_user_id', firstIssue(param.error));
      if (param.data.user_id !== caller.userId) {
        return sendError(reply, 403, 'forbidden', 'a collection is only for its owner');
      }
      try {
        // Redis, else PostgreSQL: only both failing (a miss with the database down) fails the read.
        return await collections.get(param.data.user_id);
      } catch (err) {
        logger.warn({ err: describeError(err) }, 'user collection unavailable');
        return sendError(reply, 503, 'collection_unavailable', 'the collection cannot be read right now');
      }
    });
  }

  // ---- admin API
  app.register((admin, _opts, done) => {
    // CSV only in this scope, behind the token check (onRequest runs before any
    // body is read), and large only on the import route (its own bodyLimit).
    admin.addContentTypeParser(['text/csv', 'text/plain'], { parseAs: 'buffer' }, (_req, body, parsed) =>
      parsed(null, body),
    );
    admin.addHook('onRequest', async (req, reply) => {
      if (!options.adminToken) {
        return sendError(reply, 403, 'admin_disabled', 'set ADMIN_TOKEN to enable the admin API');
      }
      if (!bearerMatches(req.headers.authorization, options.adminToken)) {
        return sendError(reply, 401, 'unauthorized');
      }
    });

    admin.put('/admin/characters/:code', async (req, reply) => {
      const param = codeParam.safeParse(req.params);
      if (!param.success) return sendError(reply, 400, 'invalid_code', firstIssue(param.error));
      const body = characterBody.safeParse(req.body);
      if (!body.success) return sendError(reply, 400, 'invalid_body', firstIssue(body.error));
      const input: CharacterInput = { code: param.data.code, ...body.data };
      const { character, created, version } = await repository.upsertByCode(input);
      return reply.code(created ? 201 : 200).send({ character, version });
    });

    admin.delete('/admin/characters/:code', async (req, reply) => {
      const param = codeParam.safeParse(req.params);
      if (!param.success) return sendError(reply, 400, 'invalid_code', firstIssue(param.error));
      const deleted = await repository.deleteByCode(param.data.code);
      if (!deleted) return sendError(reply, 404, 'not_found', `no character with code ${param.data.code}`);
      return reply.code(204).send();
    });

    admin.post('/admin/characters/import', { bodyLimit: maxCsvBytes }, async (req, reply) => {
      if (!Buffer.isBuffer(req.body)) {
        return sendError(reply, 415, 'unsupported_media_type', 'send the CSV as text/csv');
      }
      const parsed = parseCatalogCsv(req.body);
      if (!parsed.ok) {
        // Every error is counted; the parser keeps the first 1000 (a file wrong on every line stays cheap).
        const more = moreCsvErrors(parsed);
        return sendError(reply, 422, 'invalid_csv', `nothing was imported${more ? `; ${more}` : ''}`, {
          error_count: parsed.errorCount,
          more_errors: parsed.errorCount - parsed.errors.length,
          errors: parsed.errors,
        });
      }
      const result = await repository.replaceAll(parsed.rows);
      return { imported: result.total, ...result };
    });
    done();
  });

  return app;
}
