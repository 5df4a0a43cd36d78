// Celery task protocol v2, as Celery 5 sends it over AMQP (see INTEROP.md):
// headers carry `task`, `id`, `expires`, ...; the body is JSON
// `[args, kwargs, {"callbacks","errbacks","chain","chord"}]`.
import { randomUUID } from 'node:crypto';
import { grantUserIdProblem } from '../catalog/grant.ts';

/** The one task this worker runs. */
export const MATCH_TASK_NAME = 'character.match_reward';

export type TaskErrorCode =
  /** content_type is not application/json (pickle, yaml, msgpack, text...). */
  | 'TASK_BAD_CONTENT_TYPE'
  /** content_encoding is not utf-8, or the bytes are not valid UTF-8. */
  | 'TASK_BAD_ENCODING'
  | 'TASK_TOO_LARGE'
  | 'TASK_BAD_JSON'
  /** headers.task / headers.id missing (e.g. protocol v1) or headers.expires unreadable. */
  | 'TASK_BAD_HEADERS'
  /** A task name other than character.match_reward. */
  | 'TASK_UNKNOWN'
  /** The body, args or kwargs do not have the task's shape. */
  | 'TASK_BAD_SHAPE'
  /** Delivered more often than the worker's deliveryLimit (x-delivery-count): it keeps failing. */
  | 'TASK_DELIVERY_LIMIT';

/** Why a message cannot be run. Carries the task id and name when the headers had them. */
export class TaskError extends Error {
  readonly code: TaskErrorCode;
  readonly taskId: string | undefined;
  readonly taskName: string | undefined;

  constructor(code: TaskErrorCode, message: string, task: { id?: string; name?: string } = {}) {
    super(message);
    this.name = 'TaskError';
    this.code = code;
    this.taskId = task.id;
    this.taskName = task.name;
  }
}

/** The seed's classification; any field may be missing. */
export interface Classification {
  major_category?: string;
  middle_category?: string;
  minor_category?: string;
}

export interface MatchTask {
  id: string;
  name: typeof MATCH_TASK_NAME;
  classification: Classification;
  /** kwargs.user_id, stringified when it was a number; undefined when absent. */
  userId: string | undefined;
  /** headers.expires as epoch ms; undefined when the task never expires. */
  expiresAt: number | undefined;
  /** headers.ignore_result: the caller asked for no stored result. */
  ignoreResult: boolean;
}

export type ParsedTask = { ok: true; task: MatchTask } | { ok: false; error: TaskError };

/** What the parser reads from a delivery; rabbitmq-client's AsyncMessage fits. */
export interface CeleryMessage {
  /**
   * The raw bytes (the worker's consumer keeps them raw, so that `maxBytes`
   * is checked before any parsing), or a value already parsed, as
   * rabbitmq-client's own consumer hands over application/json without a
   * content_encoding (then no size is checked: it was already paid for).
   */
  body: unknown;
  contentType?: string | undefined;
  contentEncoding?: string | undefined;
  headers?: Record<string, unknown> | undefined;
}

export interface ParseOptions {
  /** Larger bodies are refused (TASK_TOO_LARGE). @default 1 MiB */
  maxBytes?: number;
}

const CLASSIFICATION_FIELDS = ['major_category', 'middle_category', 'minor_category'] as const;
const MAX_ID_LENGTH = 255;
const MAX_FIELD_LENGTH = 10_000;
const MAX_USER_ID_LENGTH = 200;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses and validates one delivery. Never throws: bad input is a typed TaskError. */
export function parseCeleryTask(message: CeleryMessage, options: ParseOptions = {}): ParsedTask {
  try {
    return { ok: true, task: parse(message, options.maxBytes ?? 1024 * 1024) };
  } catch (err) {
    if (err instanceof TaskError) return { ok: false, error: err };
    return { ok: false, error: new TaskError('TASK_BAD_SHAPE', `unreadable task: ${String(err)}`) };
  }
}

function parse(message: CeleryMessage, maxBytes: number): MatchTask {
  const headers = message.headers ?? {};
  const name = headers.task;
  const id = headers.id;
  if (typeof name !== 'string' || typeof id !== 'string') {
    throw new TaskError(
      'TASK_BAD_HEADERS',
      'not a Celery protocol v2 task: headers.task and headers.id must be strings',
      { id: typeof id === 'string' ? id : undefined, name: typeof name === 'string' ? name : undefined },
    );
  }
  const ref = { id, name };
  if (id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new TaskError('TASK_BAD_HEADERS', `headers.id must be 1 to ${MAX_ID_LENGTH} characters`, {
      name,
    });
  }
  if (name !== MATCH_TASK_NAME) {
    throw new TaskError('TASK_UNKNOWN', `unknown task ${JSON.stringify(name.slice(0, 200))}`, ref);
  }
  const expiresAt = parseExpires(headers.expires, ref);

  const body = decodeBody(message, maxBytes, ref);
  if (!Array.isArray(body) || body.length < 2 || body.length > 3) {
    throw new TaskError('TASK_BAD_SHAPE', 'body must be [args, kwargs, embed]', ref);
  }
  const [args, kwargs] = body as unknown[];
  if (!Array.isArray(args)) throw new TaskError('TASK_BAD_SHAPE', 'args must be a list', ref);
  if (!isPlainObject(kwargs)) throw new TaskError('TASK_BAD_SHAPE', 'kwargs must be a dict', ref);
  if (args.length !== 1) {
    throw new TaskError('TASK_BAD_SHAPE', `args must be [classification], got ${args.length} items`, ref);
  }
  return {
    id,
    name: MATCH_TASK_NAME,
    classification: parseClassification(args[0], ref),
    userId: parseUserId(kwargs.user_id, ref),
    expiresAt,
    ignoreResult: headers.ignore_result === true,
  };
}

function decodeBody(message: CeleryMessage, maxBytes: number, ref: { id: string; name: string }): unknown {
  const type = (message.contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new TaskError(
      'TASK_BAD_CONTENT_TYPE',
      `content_type must be application/json, got ${JSON.stringify(message.contentType ?? null)}`,
      ref,
    );
  }
  const { body } = message;
  if (!Buffer.isBuffer(body)) {
    // Already parsed by the client (application/json, no content_encoding).
    if (typeof body === 'string') return parseJson(Buffer.from(body), maxBytes, ref);
    return body;
  }
  const encoding = (message.contentEncoding ?? 'utf-8').toLowerCase();
  if (encoding !== 'utf-8' && encoding !== 'utf8') {
    throw new TaskError(
      'TASK_BAD_ENCODING',
      `content_encoding must be utf-8, got ${JSON.stringify(message.contentEncoding)}`,
      ref,
    );
  }
  return parseJson(body, maxBytes, ref);
}

function parseJson(bytes: Buffer, maxBytes: number, ref: { id: string; name: string }): unknown {
  if (bytes.length > maxBytes) {
    throw new TaskError('TASK_TOO_LARGE', `body is ${bytes.length} bytes, more than ${maxBytes}`, ref);
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new TaskError('TASK_BAD_ENCODING', 'body is not valid UTF-8', ref);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new TaskError('TASK_BAD_JSON', `body is not JSON: ${(err as Error).message}`, ref);
  }
}

function parseClassification(value: unknown, ref: { id: string; name: string }): Classification {
  if (!isPlainObject(value)) throw new TaskError('TASK_BAD_SHAPE', 'classification must be a dict', ref);
  const out: Classification = {};
  for (const field of CLASSIFICATION_FIELDS) {
    const v = value[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || v.length > MAX_FIELD_LENGTH) {
      throw new TaskError('TASK_BAD_SHAPE', `classification.${field} must be a string`, ref);
    }
    out[field] = v;
  }
  return out;
}

function parseUserId(value: unknown, ref: { id: string; name: string }): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value === 'string' && value.length <= MAX_USER_ID_LENGTH) {
    // Refused here, with the task, rather than as a grant the database refuses later.
    const problem = grantUserIdProblem(value);
    if (problem) throw new TaskError('TASK_BAD_SHAPE', `kwargs.user_id ${problem}`, ref);
    return value;
  }
  throw new TaskError(
    'TASK_BAD_SHAPE',
    `kwargs.user_id must be a string of at most ${MAX_USER_ID_LENGTH} characters or an integer`,
    ref,
  );
}

const ISO_8601 =
  /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * headers.expires: Python's `datetime.isoformat()`, with an offset or naive.
 * A naive time is UTC, as Celery reads it with its default configuration.
 */
function parseExpires(value: unknown, ref: { id: string; name: string }): number | undefined {
  if (value === undefined || value === null) return undefined;
  const at = typeof value === 'string' ? parseIsoTime(value) : undefined;
  if (at === undefined) {
    throw new TaskError('TASK_BAD_HEADERS', 'headers.expires must be an ISO 8601 time or null', ref);
  }
  return at;
}

/** Epoch ms of an ISO 8601 date-time (naive = UTC), or undefined when unreadable. */
export function parseIsoTime(text: string): number | undefined {
  const m = ISO_8601.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const ms = frac ? Number(frac.padEnd(3, '0').slice(0, 3)) : 0;
  let at = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s ?? 0), ms);
  if (zone && zone.toUpperCase() !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offsetMin = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2) || 0);
    at -= sign * offsetMin * 60_000;
  }
  return Number.isFinite(at) ? at : undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

// ------------------------------------------------------------------ sending

export interface CeleryTaskInput {
  classification: Classification | Record<string, unknown>;
  userId?: string | number;
  /** @default a random uuid */
  id?: string;
  /** When set, the task expires then (headers.expires). */
  expires?: Date;
  /** @default character.match_reward */
  name?: string;
}

/** AMQP properties of a task message, in rabbitmq-client's Envelope shape (add routingKey). */
export interface CeleryTaskProperties {
  contentType: 'application/json';
  contentEncoding: 'utf-8';
  durable: true;
  priority: 0;
  correlationId: string;
  replyTo: string;
  headers: Record<string, unknown>;
}

/**
 * A task message as Celery 5's `send_task` builds it (for TypeScript
 * callers, tests and benchmarks). Publish it to the exchange `character.match`
 * (or the default exchange) with routing key `character.match`.
 */
export function encodeCeleryTask(input: CeleryTaskInput): {
  id: string;
  body: Buffer;
  properties: CeleryTaskProperties;
} {
  const id = input.id ?? randomUUID();
  const args = [input.classification];
  const kwargs = input.userId === undefined ? {} : { user_id: input.userId };
  const embed = { callbacks: null, errbacks: null, chain: null, chord: null };
  return {
    id,
    body: Buffer.from(JSON.stringify([args, kwargs, embed])),
    properties: {
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      durable: true,
      priority: 0,
      correlationId: id,
      replyTo: randomUUID(),
      headers: {
        lang: 'js',
        task: input.name ?? MATCH_TASK_NAME,
        id,
        shadow: null,
        eta: null,
        expires: input.expires ? input.expires.toISOString() : null,
        group: null,
        group_index: null,
        retries: 0,
        timelimit: [null, null],
        root_id: id,
        parent_id: null,
        argsrepr: JSON.stringify(args),
        kwargsrepr: JSON.stringify(kwargs),
        origin: `cachecast@${process.pid}`,
        ignore_result: false,
      },
    },
  };
}
