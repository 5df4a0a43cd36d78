// Task results stored as Celery 5.2's Redis result backend stores them, so that
// Python's AsyncResult.get() returns (or raises) them. Checked against
// celery/backends/base.py (_get_result_meta, _store_result, prepare_exception,
// mark_as_revoked), celery/backends/redis.py (_set) and celery/worker/request.py
// (an expired task is marked REVOKED with TaskRevokedError('expired')), and
// against what a real Celery 5.2.6 worker writes.
import type { RedisClient } from '../redis/client.ts';
import { integerRangeOption } from '../options.ts';

export type CeleryState = 'SUCCESS' | 'FAILURE' | 'REVOKED';

/** A serialized exception, as `prepare_exception` writes it for the json serializer. */
export interface CeleryException {
  exc_type: string;
  exc_message: unknown[];
  exc_module: string;
}

/** The stored JSON (`celery-task-meta-<id>`). Key order is Celery's. */
export interface CeleryResultMeta {
  status: CeleryState;
  result: unknown;
  traceback: string | null;
  /** `current_task_children(request)`: `[]` for a task that started no subtask. */
  children: unknown[];
  /** `datetime.utcnow().isoformat()`: naive UTC, microseconds. */
  date_done: string;
  task_id: string;
}

export const TASK_META_PREFIX = 'celery-task-meta-';

export function taskMetaKey(taskId: string): string {
  return TASK_META_PREFIX + taskId;
}

/** Python's `datetime.utcnow().isoformat()` for an epoch-ms time: "2026-01-01T10:00:00.123000". */
export function celeryDateDone(epochMs: number): string {
  const iso = new Date(epochMs).toISOString(); // 2026-01-01T10:00:00.123Z
  return `${iso.slice(0, -1)}000`;
}

export function successMeta(taskId: string, result: unknown, nowMs: number): CeleryResultMeta {
  return meta('SUCCESS', taskId, result, null, nowMs);
}

/**
 * What a Celery worker stores for a task it will not run: `mark_as_revoked`
 * with `TaskRevokedError(reason)`; reason 'expired' for an expired task.
 * Python's AsyncResult.get() then raises celery.exceptions.TaskRevokedError.
 */
export function revokedMeta(taskId: string, nowMs: number, reason = 'expired'): CeleryResultMeta {
  const exc: CeleryException = {
    exc_type: 'TaskRevokedError',
    exc_message: [reason],
    exc_module: 'celery.exceptions',
  };
  return meta('REVOKED', taskId, exc, null, nowMs);
}

/** A failed task: AsyncResult.get() raises `exc_module.exc_type(*exc_message)`. */
export function failureMeta(
  taskId: string,
  exc: CeleryException,
  traceback: string,
  nowMs: number,
): CeleryResultMeta {
  return meta('FAILURE', taskId, exc, traceback, nowMs);
}

function meta(
  status: CeleryState,
  taskId: string,
  result: unknown,
  traceback: string | null,
  nowMs: number,
): CeleryResultMeta {
  return { status, result, traceback, children: [], date_done: celeryDateDone(nowMs), task_id: taskId };
}

/**
 * `json.dumps(value)` as kombu calls it: separators ", " and ": ", non-ASCII
 * (and DEL) escaped as lowercase \uXXXX. The stored bytes then equal a Python
 * worker's for the same result.
 */
export function pythonJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value).replace(
        /[\u007f-\uffff]/g,
        (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
      );
    case 'number':
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
      const toJSON = (value as { toJSON?: () => unknown }).toJSON;
      if (typeof toJSON === 'function') return pythonJson(toJSON.call(value));
      const parts: string[] = [];
      for (const [k, v] of Object.entries(value)) {
        if (v === undefined || typeof v === 'function') continue;
        parts.push(`${pythonJson(k)}: ${pythonJson(v)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default:
      return 'null';
  }
}

export interface ResultBackendOptions {
  client: RedisClient;
  /**
   * Seconds a result is kept (Celery's `result_expires`); 0 keeps it forever
   * (SET instead of SETEX, as Celery does).
   * @default 86400
   */
  expiresSec?: number;
}

/** Celery's Redis result backend, for the writes a worker makes. */
export class CeleryResultBackend {
  readonly #client: RedisClient;
  readonly expiresSec: number;

  constructor(options: ResultBackendOptions) {
    this.#client = options.client;
    this.expiresSec = integerRangeOption('expiresSec', options.expiresSec, 86_400, 0);
  }

  /**
   * One MULTI of SETEX and PUBLISH on `celery-task-meta-<id>`, as Celery's
   * `RedisBackend._set`: AsyncResult.get() listens on the channel, so the
   * PUBLISH is what wakes it.
   */
  async store(meta: CeleryResultMeta): Promise<void> {
    const key = taskMetaKey(meta.task_id);
    const json = pythonJson(meta);
    const multi = this.#client.multi();
    if (this.expiresSec > 0) multi.setEx(key, this.expiresSec, json);
    else multi.set(key, json);
    multi.publish(key, json);
    await multi.exec();
  }

  /** The stored result of a task, or null. */
  async get(taskId: string): Promise<CeleryResultMeta | null> {
    const raw = await this.#client.get(taskMetaKey(taskId));
    if (raw === null) return null;
    try {
      return JSON.parse(raw) as CeleryResultMeta;
    } catch {
      return null;
    }
  }
}
