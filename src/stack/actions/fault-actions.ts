import type { BrokerProxies } from '../broker-proxy.ts';
import type { Supervisor } from '../supervisor.ts';
import { ActionError } from './action-error.ts';
import type { Targets } from './targets.ts';

/** Faults on demand: a process's broker link cut for a while, or the process killed. */
export class FaultActions {
  readonly #t: Targets;
  readonly #supervisor: Supervisor;
  readonly #proxies: BrokerProxies;

  constructor(targets: Targets, supervisor: Supervisor, proxies: BrokerProxies) {
    this.#t = targets;
    this.#supervisor = supervisor;
    this.#proxies = proxies;
  }

  disconnect(
    id: string,
    ms = this.#t.config.disconnectMs,
  ): { process: string; ms: number; restore_at: number } {
    this.#known(id);
    const ok = this.#proxies.disconnect(id, ms, () =>
      this.#t.report('info', `${id}: broker link restored; it reconnects and resyncs`),
    );
    if (!ok) throw new ActionError(409, 'no_proxy', `${id} is not behind a broker proxy`);
    this.#t.report('warn', `${id}: broker connections cut; new ones refused for ${ms / 1000} s`);
    return { process: id, ms, restore_at: Date.now() + ms };
  }

  kill(id: string): { process: string; pid: number | undefined } {
    this.#known(id);
    const pid = this.#supervisor.view(id)?.pid;
    if (!this.#supervisor.kill(id, 'SIGKILL')) {
      throw new ActionError(409, 'not_running', `${id} is not running`);
    }
    this.#t.report('warn', `${id}: sent SIGKILL to pid ${pid}`);
    return { process: id, pid };
  }

  #known(id: string): void {
    if (!this.#t.config.processes.some((p) => p.id === id)) {
      throw new ActionError(404, 'unknown_process', `no process ${JSON.stringify(id)} in the stack`);
    }
  }
}
