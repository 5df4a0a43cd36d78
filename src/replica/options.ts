import type { Bus } from '../bus/bus.ts';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { OptionRangeError, OptionTypeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { countOption, msOption, oneOfOption } from '../options.ts';
import { silentLogger } from '../logger.ts';
import type { ReplicaEvent } from './generation.ts';
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
   * The bound on silent staleness: a replica is `ready` only while it has
   * proof (a heartbeat or its own read of the source's epoch, version and
   * digest, matching its own) that it equalled its source at most this long
   * ago. 0 disables the bound (then only the periodic check proves anything).
   * @default 1000
   */
  maxStalenessMs?: number;
  /**
   * With no heartbeat proving it current for this long, a replica reads the
   * source's state itself (one cheap read), and keeps doing so while the
   * heartbeats are missing. Below maxStalenessMs.
   * @default 500
   */
  staleCheckMs?: number;
  /**
   * The backstop: how often a replica reads its source's state whatever the
   * heartbeats say (they may be forged). 0 disables it.
   * @default 30000
   */
  versionCheckIntervalMs?: number;
  /**
   * How long a replica found behind its source (or with a different digest
   * at the same version) waits for the event in flight before it repairs.
   * @default 200
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
  /**
   * @internal The fault simulator puts one known defect back (bin: npm run sim -- --mutant).
   */
  mutant?: ProtocolMutant | undefined;
  /** @internal Jitter for backoff, in [0, 1). @default Math.random (the simulator seeds it) */
  random?: (() => number) | undefined;
  /** @internal Told of every change applied (the simulator checks epochs with it). */
  onApplied?: ((event: ReplicaEvent<V>, epoch: string) => void) | undefined;
}

/** Known defects the simulator must catch. */
export const PROTOCOL_MUTANTS = [
  'buffer-order',
  'no-epoch',
  'version-only-check',
  'no-heartbeat',
  'early-unproven',
] as const;
export type ProtocolMutant = (typeof PROTOCOL_MUTANTS)[number];

export interface ResolvedReplicaOptions<V> {
  dataset: Dataset<V>;
  bus: Bus;
  source: SnapshotSource<V>;
  clock: Clock;
  logger: Logger;
  degradedReads: DegradedReadPolicy;
  maxStalenessMs: number;
  staleCheckMs: number;
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
  mutant: ProtocolMutant | undefined;
  random: () => number;
  onApplied: ((event: ReplicaEvent<V>, epoch: string) => void) | undefined;
}

export function normalizeReplicaOptions<V>(options: ReplicatedCacheOptions<V>): ResolvedReplicaOptions<V> {
  const { dataset } = options;
  if (!dataset?.name || !dataset.topic) throw new OptionTypeError('dataset needs a name and a topic');
  const degradedReads = oneOfOption(
    'degradedReads',
    options.degradedReads ?? dataset.degradedReads,
    ['serve', 'source', 'refuse'] as const,
    'serve',
  );
  const resyncRetryBaseMs = msOption('resyncRetryBaseMs', options.resyncRetryBaseMs, 200, 1);
  const maxStalenessMs = msOption('maxStalenessMs', options.maxStalenessMs, 1000);
  const staleCheckMs = msOption('staleCheckMs', options.staleCheckMs, Math.min(500, maxStalenessMs / 2));
  if (maxStalenessMs > 0 && (staleCheckMs < 1 || staleCheckMs >= maxStalenessMs)) {
    throw new OptionRangeError('staleCheckMs must be >= 1 and below maxStalenessMs');
  }
  const mutant =
    options.mutant === undefined
      ? undefined
      : oneOfOption('mutant', options.mutant, PROTOCOL_MUTANTS, options.mutant);
  return {
    dataset,
    bus: options.bus,
    source: options.source,
    clock: options.clock ?? systemClock,
    logger: (options.logger ?? silentLogger).child({ component: 'replica', dataset: dataset.name }),
    degradedReads,
    maxStalenessMs,
    staleCheckMs,
    versionCheckIntervalMs: msOption('versionCheckIntervalMs', options.versionCheckIntervalMs, 30_000),
    versionCheckGraceMs: msOption('versionCheckGraceMs', options.versionCheckGraceMs, 200),
    gapWaitMs: msOption('gapWaitMs', options.gapWaitMs, 200),
    sweepIntervalMs: msOption('sweepIntervalMs', options.sweepIntervalMs, 1000, 1),
    sweepBatch: countOption('sweepBatch', options.sweepBatch, 20_000),
    resyncRetryBaseMs,
    resyncRetryMaxMs: msOption('resyncRetryMaxMs', options.resyncRetryMaxMs, 10_000, resyncRetryBaseMs),
    maxBufferedEvents: countOption('maxBufferedEvents', options.maxBufferedEvents, 100_000),
    maxEventBytes: countOption('maxEventBytes', dataset.maxEventBytes, 1024 * 1024),
    eventSecret: options.eventSecret || undefined,
    mutant,
    random: options.random ?? Math.random,
    onApplied: options.onApplied,
  };
}
