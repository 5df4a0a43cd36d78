import type { BusMessage } from '../bus/bus.ts';
import { CachecastError } from '../errors.ts';
import type { ParsedEvent } from '../events/codec.ts';
import { parseEventMessage } from '../events/codec.ts';
import type { Heartbeat } from '../events/control.ts';
import { HEARTBEAT_TYPE, readHeartbeat, RELOAD_TYPE } from '../events/control.ts';
import type { Change } from '../events/event.ts';
import type { Dataset } from './dataset.ts';
import { DIGEST_BUCKET_S } from './digest.ts';
import type { Observation } from './freshness.ts';
import type { ReplicaEvent } from './generation.ts';

export type Incoming<V> =
  | { kind: 'event'; event: ReplicaEvent<V> }
  | { kind: 'heartbeat'; heartbeat: Heartbeat }
  /** A protocol message for another dataset sharing the exchange. */
  | { kind: 'ignore' };

/** What a heartbeat tells a replica: the source's state as a writer read it (not authoritative). */
export function heartbeatObservation(h: Heartbeat): Observation {
  const fromBucket =
    h.digestFrom !== undefined && h.digestFrom % DIGEST_BUCKET_S === 0
      ? h.digestFrom / DIGEST_BUCKET_S
      : undefined;
  return {
    epoch: h.epoch,
    version: h.version,
    digest: h.digest,
    fromBucket,
    readAt: h.readAt,
    authoritative: false,
  };
}

/** A change from a payload: the dataset's own types, or a reload marker. */
export function decodeChange<V>(dataset: Dataset<V>, payload: Record<string, unknown>): Change<V> {
  if (payload.type === RELOAD_TYPE) return { kind: 'reload' };
  return dataset.decode(payload);
}

/**
 * Checks and decodes one bus message (size, content type, signature, JSON,
 * envelope, then the dataset's shape); throws a CachecastError EVENT_* on bad
 * input. Only what ordering needs is kept: the raw payload is not held.
 */
export function decodeIncoming<V>(
  message: BusMessage,
  dataset: Dataset<V>,
  options: { maxBytes: number; secret: string | undefined },
): Incoming<V> {
  const parsed: ParsedEvent = parseEventMessage(message, options);
  if (parsed.type === HEARTBEAT_TYPE) {
    const heartbeat = readHeartbeat(parsed);
    return heartbeat.dataset === dataset.name ? { kind: 'heartbeat', heartbeat } : { kind: 'ignore' };
  }
  if (parsed.type === RELOAD_TYPE) {
    if (parsed.version === undefined)
      throw new CachecastError('EVENT_BAD_SHAPE', 'a reload marker needs a version');
    if (typeof parsed.dataset === 'string' && parsed.dataset !== dataset.name) return { kind: 'ignore' };
  }
  return {
    kind: 'event',
    event: {
      version: parsed.version,
      epoch: parsed.epoch,
      change: decodeChange(dataset, parsed),
      publishedAt: parsed.published_at,
      origin: parsed.origin,
    },
  };
}
