import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import type { SnapshotSource } from './source.ts';
import type { Dataset, DegradedReadPolicy } from './dataset.ts';

export interface ReplicatedCacheOptions<V> {
  dataset: Dataset<V>;
  bus: Bus;
  source: SnapshotSource<V>;
  /** @default the system clock */
  clock?: Clock;
  logger?: Logger;
  /** Overrides the dataset's policy for reads while not ready. */
  degradedReads?: DegradedReadPolicy;
  /**
   * How often the source's version is compared with the local one; a replica
   * found behind resyncs, so a lost event is repaired even if no later event
   * reveals the gap. 0 disables the check.
   * @default 30000
   */
  versionCheckIntervalMs?: number;
  /**
   * A replica behind the source is re-checked after this long before it
   * resyncs: the missing event is usually just in flight.
   * @default 1000
   */
  versionCheckGraceMs?: number;
  /**
   * How long a version gap may stay open before it counts as a lost event and
   * the replica resyncs: several publishers (auth instances, relays) reach the
   * broker in any order, so v+2 often arrives just before v+1.
   * @default 200
   */
  gapWaitMs?: number;
  /** How often expired entries are swept out of memory. @default 1000 */
  sweepIntervalMs?: number;
  /** Entries examined per sweep tick (bounds the pause). @default 20000 */
  sweepBatch?: number;
  /** First retry delay after a failed resync (then doubling, with jitter). @default 200 */
  resyncRetryBaseMs?: number;
  /** @default 10000 */
  resyncRetryMaxMs?: number;
  /** Events held while a snapshot loads; past this the resync starts over. @default 100000 */
  maxBufferedEvents?: number;
  /** When set, events must carry a valid HMAC signature (CACHE_EVENT_SECRET). */
  eventSecret?: string | undefined;
}

export interface ResolvedReplicaOptions<V> {
  dataset: Dataset<V>;
  bus: Bus;
  source: SnapshotSource<V>;
  clock: Clock;
  logger: Logger;
  degradedReads: DegradedReadPolicy;
  versionCheckIntervalMs: number;
  versionCheckGraceMs: number;
  gapWaitMs: number;
  sweepIntervalMs: number;
  sweepBatch: number;
  resyncRetryBaseMs: number;
  resyncRetryMaxMs: number;
  maxBufferedEvents: number;
  maxEventBytes: number;
  eventSecret: string | undefined;
}

function ms(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`${name} must be a number >= ${min}`);
  return value;
}

export function normalizeReplicaOptions<V>(options: ReplicatedCacheOptions<V>): ResolvedReplicaOptions<V> {
  const { dataset } = options;
  if (!dataset?.name || !dataset.topic) throw new TypeError('dataset needs a name and a topic');
  const degradedReads = options.degradedReads ?? dataset.degradedReads ?? 'serve';
  if (!['serve', 'source', 'refuse'].includes(degradedReads)) {
    throw new RangeError(`degradedReads must be serve, source or refuse`);
  }
  const resyncRetryBaseMs = ms('resyncRetryBaseMs', options.resyncRetryBaseMs ?? 200, 1);
  return {
    dataset,
    bus: options.bus,
    source: options.source,
    clock: options.clock ?? systemClock,
    logger: (options.logger ?? silentLogger).child({ component: 'replica', dataset: dataset.name }),
    degradedReads,
    versionCheckIntervalMs: ms('versionCheckIntervalMs', options.versionCheckIntervalMs ?? 30_000, 0),
    versionCheckGraceMs: ms('versionCheckGraceMs', options.versionCheckGraceMs ?? 1000, 0),
    gapWaitMs: ms('gapWaitMs', options.gapWaitMs ?? 200, 0),
    sweepIntervalMs: ms('sweepIntervalMs', options.sweepIntervalMs ?? 1000, 1),
    sweepBatch: ms('sweepBatch', options.sweepBatch ?? 20_000, 1),
    resyncRetryBaseMs,
    resyncRetryMaxMs: ms('resyncRetryMaxMs', options.resyncRetryMaxMs ?? 10_000, resyncRetryBaseMs),
    maxBufferedEvents: ms('maxBufferedEvents', options.maxBufferedEvents ?? 100_000, 1),
    maxEventBytes: ms('maxEventBytes', dataset.maxEventBytes ?? 1024 * 1024, 1),
    eventSecret: options.eventSecret || undefined,
  };
}
