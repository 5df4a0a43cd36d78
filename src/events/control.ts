import { CachecastError } from '../errors.ts';
import type { ParsedEvent } from './codec.ts';

/**
 * Events of the sync protocol itself, on the dataset's own exchange. Consumers
 * that do not know them ignore them (the seed's consumer dispatches on `type`
 * and drops the rest).
 */

/**
 * The writing side's periodic statement of the source's state: `(epoch,
 * version, digest)` as read at `read_at`. A replica holding the same state
 * has proof it was current then; one that is not catches up or checks.
 */
export const HEARTBEAT_TYPE = 'cachecast.heartbeat';

/**
 * Stands in for an event too large to send (a big import's full_refresh):
 * replicas load the source at this event's version instead.
 */
export const RELOAD_TYPE = 'cachecast.reload';

export interface Heartbeat {
  dataset: string;
  epoch: string;
  version: number;
  /** The source's digest of the entries expiring at or after `digestFrom` (all entries when absent). */
  digest?: string | undefined;
  /** Unix seconds; present for datasets whose entries expire. */
  digestFrom?: number | undefined;
  /** Epoch ms (the publisher's clock) when the state was read from the source. */
  readAt: number;
}

/** The wire payload of a heartbeat (the envelope adds version, epoch, published_at, origin). */
export function heartbeatPayload(h: Heartbeat): Record<string, unknown> {
  const payload: Record<string, unknown> = { type: HEARTBEAT_TYPE, dataset: h.dataset, read_at: h.readAt };
  if (h.digest !== undefined) payload.digest = h.digest;
  if (h.digestFrom !== undefined) payload.digest_from = h.digestFrom;
  return payload;
}

function bad(message: string): CachecastError {
  return new CachecastError('EVENT_BAD_SHAPE', `heartbeat: ${message}`);
}

/** Validates a parsed heartbeat event. */
export function readHeartbeat(event: ParsedEvent): Heartbeat {
  const { dataset, epoch, version, digest, digest_from: digestFrom, read_at: readAt } = event;
  if (typeof dataset !== 'string' || dataset.length === 0 || dataset.length > 200) throw bad('no "dataset"');
  if (epoch === undefined || version === undefined) throw bad('needs "epoch" and "version"');
  if (digest !== undefined && !(typeof digest === 'string' && /^[0-9a-f]{16}$/.test(digest))) {
    throw bad('"digest" must be 16 hex digits');
  }
  if (digestFrom !== undefined && !Number.isSafeInteger(digestFrom))
    throw bad('"digest_from" must be unix seconds');
  if (typeof readAt !== 'number' || !Number.isFinite(readAt))
    throw bad('"read_at" must be epoch milliseconds');
  return {
    dataset,
    epoch: epoch,
    version,
    digest: digest,
    digestFrom: digestFrom as number | undefined,
    readAt,
  };
}
