import type { ActivityLine } from './dashboard-server.ts';
import type { ProcessStatus, StackSnapshot } from './snapshot.ts';

export interface ReadinessOptions {
  startedAt: number;
  dashboardUrl: string;
  report: (level: ActivityLine['level'], message: string) => void;
}

/**
 * Watches the snapshots taken after each poll: status transitions worth
 * telling (degraded and back, ready again after a restart) go to the activity
 * log, and `ready` resolves the first time every available process is ready.
 */
export class Readiness {
  readonly #o: ReadinessOptions;
  readonly #lastStatus = new Map<string, ProcessStatus>();
  #allReady = false;
  #resolveReady!: () => void;
  /** Resolves the first time every available process is ready. */
  readonly ready = new Promise<void>((resolve) => (this.#resolveReady = resolve));

  constructor(options: ReadinessOptions) {
    this.#o = options;
  }

  observe(snap: StackSnapshot): void {
    const { report } = this.#o;
    for (const p of snap.processes) {
      const before = this.#lastStatus.get(p.id);
      this.#lastStatus.set(p.id, p.status);
      if (before === undefined || before === p.status) continue;
      // Degraded and back; ready again after a restart. Crashes are the supervisor's to report.
      const interesting =
        p.status === 'degraded' || before === 'degraded' || (p.status === 'ready' && p.restarts > 0);
      if (interesting && !snap.stopping) {
        const detail = p.replicas.map((r) => `${r.dataset} ${r.state} v${r.version}`).join(', ');
        report(
          p.status === 'degraded' ? 'warn' : 'info',
          `${p.id}: ${before} -> ${p.status}${detail ? ` (${detail})` : ''}`,
        );
      }
    }
    if (!this.#allReady && snap.total > 0 && snap.ready === snap.total) {
      this.#allReady = true;
      report(
        'info',
        `all ${snap.total} processes ready after ${((Date.now() - this.#o.startedAt) / 1000).toFixed(1)} s; dashboard ${this.#o.dashboardUrl}`,
      );
      this.#resolveReady();
    }
  }
}
