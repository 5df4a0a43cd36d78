import { describeError } from '../../errors.ts';
import type { StackConfig, StackProcessSpec } from '../config.ts';
import { ActionError } from './action-error.ts';

/** A line for the dashboard's activity log (and the terminal). */
export type Report = (level: 'info' | 'warn', message: string) => void;

/** The running processes the actions talk to, found by service, and how to call them. */
export class Targets {
  readonly config: StackConfig;
  readonly report: Report;

  constructor(config: StackConfig, report: Report) {
    this.config = config;
    this.report = report;
  }

  processes(service: StackProcessSpec['service']): StackProcessSpec[] {
    return this.config.processes.filter((p) => p.service === service);
  }

  one(service: StackProcessSpec['service']): StackProcessSpec {
    const p = this.processes(service)[0];
    if (!p) throw new ActionError(500, 'no_process', `the stack has no ${service}`);
    return p;
  }

  url(p: StackProcessSpec, path: string, admin = false): string {
    const port = admin ? p.adminPort : p.port;
    return `http://${this.config.host}:${port}${path}`;
  }

  /** A request to a service; one that does not answer within 5 s is a 503 `<what>_unreachable`. */
  async call(what: string, url: string, init: RequestInit = {}): Promise<Response> {
    try {
      return await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
    } catch (err) {
      throw new ActionError(503, `${what}_unreachable`, `${what} did not answer: ${describeError(err)}`);
    }
  }
}

/** Milliseconds to two decimals, as the dashboard shows them. */
export function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
