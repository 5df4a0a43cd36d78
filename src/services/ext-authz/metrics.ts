import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { DecisionLog } from './decision.ts';

/**
 * Decisions are counted by the log (a plain object increment on the hot path)
 * and read at scrape time; latency is a histogram, in seconds, by transport.
 */
export function registerAuthzMetrics(registry: Registry, log: DecisionLog): Histogram<'via'> {
  new Counter({
    name: 'cachecast_authz_decisions_total',
    help: 'ext-authz decisions by reason (allow, or the deny code)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(log.counts)) this.inc({ reason }, n);
    },
  });
  return new Histogram({
    name: 'cachecast_authz_check_seconds',
    help: 'Time to decide one check, from the header to the decision',
    labelNames: ['via'],
    buckets: [0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1],
    registers: [registry],
  });
}
