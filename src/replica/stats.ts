import type { FreshnessStats } from './freshness.ts';
import type { ResyncReason } from './resync.ts';

export type ReplicaState = 'syncing' | 'ready' | 'degraded';

export interface ReplicaStats {
  dataset: string;
  state: ReplicaState;
  version: number;
  /** The source epoch this replica's data belongs to ('' for a source without epochs). */
  epoch: string;
  /** The replica's content digest (16 hex digits, the buckets still comparable now), or null. */
  digest: string | null;
  size: number;
  /** ISO time of the last applied event, or null. */
  last_event_at: string | null;
  /** now - published_at of the last applied event that carried one. */
  lag_ms: number | null;
  /** ISO time of the last proof that the replica equalled its source, or null. */
  verified_at: string | null;
  /** now - verified_at: how old that proof is. */
  staleness_ms: number | null;
  events_applied: number;
  events_rejected: number;
  events_duplicate: number;
  /** Events of an epoch the replica has left (in flight across a source reset), dropped. */
  events_stale_epoch: number;
  /** Versioned events waiting past a gap. */
  events_held: number;
  gaps: number;
  resyncs: number;
  resync_failures: number;
  /** Lost events repaired from the source's change log, without a full load. */
  catch_ups: number;
  /** Same version, different content: found by the digest, repaired by a reload. */
  divergences: number;
  heartbeats: number;
  /** Reads of the source's state by this replica (no heartbeat proved it current, or the backstop). */
  source_checks: number;
  source_check_failures: number;
  /** Why the replica is repairing itself right now (a lost event, a divergence, a new epoch), or null. */
  repairing: string | null;
  /** The source read last failed (a resync keeps retrying with backoff). */
  source_failing: boolean;
  last_resync_at: string | null;
  last_resync_reason: ResyncReason | null;
  degraded_read_policy: string;
  bus_connected: boolean;
  rejected_by_code: Record<string, number>;
}

/** The replica's counters, kept apart from its logic. */
export class ReplicaCounters {
  applied = 0;
  rejected = 0;
  duplicates = 0;
  staleEpoch = 0;
  gaps = 0;
  resyncs = 0;
  resyncFailures = 0;
  catchUps = 0;
  lastEventAt: number | null = null;
  lagMs: number | null = null;
  lastResyncAt: number | null = null;
  lastResyncReason: ResyncReason | null = null;
  readonly rejectedByCode: Record<string, number> = {};

  reject(code: string): void {
    this.rejected++;
    this.rejectedByCode[code] = (this.rejectedByCode[code] ?? 0) + 1;
  }

  noteApplied(now: number, publishedAt: number | undefined): void {
    this.applied++;
    this.lastEventAt = now;
    if (publishedAt !== undefined) this.lagMs = Math.max(0, now - publishedAt);
  }

  /** The replica's stats: these counters and what the rest of the replica reports. */
  toStats(p: {
    now: number;
    dataset: string;
    state: ReplicaState;
    version: number;
    epoch: string;
    digest: string | null;
    size: number;
    held: number;
    freshness: FreshnessStats;
    repairing: string | null;
    sourceFailing: boolean;
    degradedReadPolicy: string;
    busConnected: boolean;
  }): ReplicaStats {
    const f = p.freshness;
    return {
      dataset: p.dataset,
      state: p.state,
      version: p.version,
      epoch: p.epoch,
      digest: p.digest,
      size: p.size,
      last_event_at: isoOrNull(this.lastEventAt),
      lag_ms: this.lagMs,
      verified_at: isoOrNull(f.verified_at),
      staleness_ms: f.verified_at === null ? null : Math.max(0, p.now - f.verified_at),
      events_applied: this.applied,
      events_rejected: this.rejected,
      events_duplicate: this.duplicates,
      events_stale_epoch: this.staleEpoch,
      events_held: p.held,
      gaps: this.gaps,
      resyncs: this.resyncs,
      resync_failures: this.resyncFailures,
      catch_ups: this.catchUps,
      divergences: f.divergences,
      heartbeats: f.heartbeats,
      source_checks: f.checks,
      source_check_failures: f.check_failures,
      repairing: p.repairing,
      source_failing: p.sourceFailing,
      last_resync_at: isoOrNull(this.lastResyncAt),
      last_resync_reason: this.lastResyncReason,
      degraded_read_policy: p.degradedReadPolicy,
      bus_connected: p.busConnected,
      rejected_by_code: { ...this.rejectedByCode },
    };
  }
}

function isoOrNull(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}
