import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ReplicaStats, ReplicatedCache } from '../replica/replicated-cache.ts';

const STATES = ['syncing', 'ready', 'degraded'] as const;

/**
 * Prometheus metrics for a set of replicas, read from their stats at scrape
 * time, so the read and apply paths carry no metric overhead.
 */
export function createMetricsRegistry(
  replicas: () => Iterable<ReplicatedCache<unknown>>,
  options: { defaultMetrics?: boolean; prefix?: string } = {},
): Registry {
  const registry = new Registry();
  const p = options.prefix ?? 'cachecast_';
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: p });

  type Stats = ReplicaStats;
  const each = (fn: (stats: Stats) => void): void => {
    for (const replica of replicas()) fn(replica.stats());
  };
  /** A metric per dataset, read from the replicas' stats at scrape time. */
  const perDataset = (kind: 'gauge' | 'counter', name: string, help: string, value: (s: Stats) => number) => {
    const config = { name: p + name, help, labelNames: ['dataset'], registers: [registry] };
    if (kind === 'gauge') {
      new Gauge({
        ...config,
        collect() {
          this.reset();
          each((s) => this.set({ dataset: s.dataset }, value(s)));
        },
      });
    } else {
      new Counter({
        ...config,
        collect() {
          this.reset();
          each((s) => this.inc({ dataset: s.dataset }, value(s)));
        },
      });
    }
  };
  const gauge = (name: string, help: string, value: (s: Stats) => number) =>
    perDataset('gauge', name, help, value);
  const counter = (name: string, help: string, value: (s: Stats) => number) =>
    perDataset('counter', name, help, value);

  gauge('replica_size', 'Entries held by the replica', (s) => s.size);
  gauge('replica_version', 'Dataset version the replica holds', (s) => s.version);
  gauge('replica_lag_ms', 'now - published_at of the last applied event', (s) => s.lag_ms ?? 0);
  gauge('replica_last_event_timestamp_seconds', 'When the last event was applied', (s) =>
    s.last_event_at ? Date.parse(s.last_event_at) / 1000 : 0,
  );
  new Gauge({
    name: p + 'replica_state',
    help: '1 for the state the replica is in',
    labelNames: ['dataset', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      each((s) => {
        for (const state of STATES) this.set({ dataset: s.dataset, state }, s.state === state ? 1 : 0);
      });
    },
  });
  gauge(
    'replica_staleness_ms',
    "How old the replica's last proof of equality with its source is (ready only while under the bound)",
    (s) => s.staleness_ms ?? -1,
  );
  gauge('replica_events_held', 'Versioned events waiting past a gap', (s) => s.events_held);
  counter('replica_events_applied_total', 'Events applied', (s) => s.events_applied);
  counter(
    'replica_events_stale_epoch_total',
    'Events of a source epoch the replica left, dropped',
    (s) => s.events_stale_epoch,
  );
  counter('replica_catch_ups_total', "Lost events repaired from the source's change log", (s) => s.catch_ups);
  counter(
    'replica_divergences_total',
    'Same version, different content: found by the digest, reloaded',
    (s) => s.divergences,
  );
  counter('replica_heartbeats_total', "Writers' heartbeats received", (s) => s.heartbeats);
  counter(
    'replica_source_checks_total',
    "Reads of the source's state by the replica itself",
    (s) => s.source_checks,
  );
  counter('replica_events_duplicate_total', 'Versioned events already applied', (s) => s.events_duplicate);
  counter('replica_gaps_total', 'Version gaps detected', (s) => s.gaps);
  counter('replica_resyncs_total', 'Snapshots loaded', (s) => s.resyncs);
  counter('replica_resync_failures_total', 'Snapshot loads that failed', (s) => s.resync_failures);
  new Counter({
    name: p + 'replica_events_rejected_total',
    help: 'Malformed events rejected, by error code',
    labelNames: ['dataset', 'code'],
    registers: [registry],
    collect() {
      this.reset();
      each((s) => {
        for (const [code, n] of Object.entries(s.rejected_by_code)) this.inc({ dataset: s.dataset, code }, n);
      });
    },
  });
  return registry;
}
