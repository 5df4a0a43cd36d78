import { Counter, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';

export type TaskOutcome = 'success' | 'no_match' | 'expired' | 'dead_lettered' | 'failed';
export const TASK_OUTCOMES: readonly TaskOutcome[] = [
  'success',
  'no_match',
  'expired',
  'dead_lettered',
  'failed',
];

/** The worker's metrics, shared by every worker registered on the same registry. */
export function workerMetrics(registry: Registry): {
  tasks: Counter<'outcome'>;
  latency: Histogram<'outcome'>;
} {
  const tasksName = 'cachecast_match_tasks_total';
  const latencyName = 'cachecast_match_task_duration_seconds';
  const tasks =
    (registry.getSingleMetric(tasksName) as Counter<'outcome'> | undefined) ??
    new Counter({
      name: tasksName,
      help: 'Match tasks handled, by outcome (failed = requeued after a failed write)',
      labelNames: ['outcome'],
      registers: [registry],
    });
  const latency =
    (registry.getSingleMetric(latencyName) as Histogram<'outcome'> | undefined) ??
    new Histogram({
      name: latencyName,
      help: 'Time from delivery to ack decision per match task, by outcome',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
  for (const outcome of TASK_OUTCOMES) tasks.inc({ outcome }, 0);
  return { tasks, latency };
}
