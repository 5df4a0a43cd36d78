import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { OutboxRelay } from './relay.ts';

/** The relay's backlog and throughput, read at scrape time. */
export function registerOutboxMetrics(registry: Registry, relay: OutboxRelay): void {
  new Gauge({
    name: 'cachecast_outbox_pending',
    help: 'Committed events not yet confirmed by the broker (a backlog that grows means the relay cannot publish)',
    registers: [registry],
    async collect() {
      // A failing count must not fail the whole scrape: report nothing for this gauge.
      this.reset();
      const pending = await relay.pending().catch(() => undefined);
      if (pending !== undefined) this.set(pending);
    },
  });
  new Counter({
    name: 'cachecast_outbox_published_total',
    help: 'Outbox events published with a broker confirm',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(relay.stats.published);
    },
  });
  new Counter({
    name: 'cachecast_outbox_failures_total',
    help: 'Relay passes that failed (broker or database), retried with backoff',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(relay.stats.failures);
    },
  });
}
