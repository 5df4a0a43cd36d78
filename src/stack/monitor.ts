import type { StackProcessSpec } from './config.ts';

/** The part of `GET /replicas` the dashboard shows (the rest is passed through). */
export interface ReplicaView {
  dataset: string;
  state: string;
  version: number;
  size: number;
  last_event_at: string | null;
  lag_ms: number | null;
  [field: string]: unknown;
}

/** One ext-authz decision (`GET /decisions` on its admin port). */
export interface Decision {
  at: number;
  allow: boolean;
  reason: string;
  sub?: string;
  jti?: string;
}

export interface DecisionsView {
  counts: Record<string, number>;
  recent: Decision[];
}

/** What a process's admin port said at the last poll. */
export interface ProbeView {
  /** The admin port answered /readyz (any status). */
  reachable: boolean;
  ready: boolean;
  replicas: ReplicaView[];
  /** ext-authz only; null while its admin port has no /decisions (404) or is down. */
  decisions: DecisionsView | null;
  /** match-worker only: GET /worker (task counts). */
  worker: Record<string, unknown> | null;
  /** Epoch ms of the last poll that reached the process. */
  seen_at: number | null;
  error: string | null;
}

const EMPTY: ProbeView = {
  reachable: false,
  ready: false,
  replicas: [],
  decisions: null,
  worker: null,
  seen_at: null,
  error: null,
};

export interface MonitorOptions {
  host: string;
  /** ADMIN_PORT_TOKEN of the children: /decisions and /worker need it. */
  adminPortToken?: string;
  processes: readonly StackProcessSpec[];
  /** @default 400 */
  intervalMs?: number;
  /** Per request. @default 1500 */
  timeoutMs?: number;
  /** Only processes this says are running are polled. */
  isRunning: (id: string) => boolean;
  /** After every round of polls. What it throws rejects `pollNow()`; between scheduled rounds it is ignored. */
  onPoll?: () => void;
}

/**
 * Polls every child's admin port (/readyz, /replicas, and /decisions or
 * /worker by service) and keeps the last answer: the dashboard's view of each
 * process and its replicas.
 */
export class StatusMonitor {
  readonly #o: Required<Omit<MonitorOptions, 'onPoll' | 'adminPortToken'>> &
    Pick<MonitorOptions, 'onPoll' | 'adminPortToken'>;
  readonly #views = new Map<string, ProbeView>();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #closed = false;
  #round: Promise<void> | undefined;

  constructor(options: MonitorOptions) {
    this.#o = { intervalMs: 400, timeoutMs: 1500, ...options };
  }

  start(): void {
    if (this.#running || this.#closed) return;
    this.#running = true;
    this.#schedule(0);
  }

  view(id: string): ProbeView {
    return this.#views.get(id) ?? EMPTY;
  }

  /** Polls now (between scheduled rounds), e.g. right after an action. */
  async pollNow(): Promise<void> {
    await this.#pollAll();
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      // A round that failed (onPoll threw) is not an unhandled rejection: the next one comes anyway.
      void this.#pollAll()
        .catch(() => undefined)
        .finally(() => this.#schedule(this.#o.intervalMs));
    }, ms);
    this.#timer.unref();
  }

  #pollAll(): Promise<void> {
    this.#round ??= (async () => {
      try {
        await Promise.all(this.#o.processes.map((p) => this.#poll(p)));
        this.#o.onPoll?.();
      } finally {
        this.#round = undefined;
      }
    })();
    return this.#round;
  }

  async #poll(p: StackProcessSpec): Promise<void> {
    if (!this.#o.isRunning(p.id)) {
      this.#views.set(p.id, { ...EMPTY, seen_at: this.#views.get(p.id)?.seen_at ?? null });
      return;
    }
    const base = `http://${this.#o.host}:${p.adminPort}`;
    const previous = this.#views.get(p.id) ?? EMPTY;
    try {
      const [readyz, replicas, extra] = await Promise.all([
        this.#get(`${base}/readyz`),
        this.#get(`${base}/replicas`),
        p.service === 'ext-authz'
          ? this.#get(`${base}/decisions`).catch(() => null)
          : p.service === 'match-worker'
            ? this.#get(`${base}/worker`).catch(() => null)
            : Promise.resolve(null),
      ]);
      const view: ProbeView = {
        reachable: true,
        ready: readyz.status === 200,
        replicas: Array.isArray(replicas.body) ? (replicas.body as ReplicaView[]) : [],
        decisions:
          p.service === 'ext-authz' && extra?.status === 200 && isDecisions(extra.body) ? extra.body : null,
        worker:
          p.service === 'match-worker' && extra?.status === 200 && isObject(extra.body) ? extra.body : null,
        seen_at: Date.now(),
        error: null,
      };
      this.#views.set(p.id, view);
    } catch (err) {
      this.#views.set(p.id, {
        ...EMPTY,
        seen_at: previous.seen_at,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  async #get(url: string): Promise<{ status: number; body: unknown }> {
    const token = this.#o.adminPortToken;
    const res = await fetch(url, {
      signal: AbortSignal.timeout(this.#o.timeoutMs),
      ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    const text = await res.text();
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    return { status: res.status, body };
  }

  /** Stops polling (a round in flight finishes). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#round?.catch(() => undefined);
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDecisions(value: unknown): value is DecisionsView {
  return isObject(value) && isObject(value.counts) && Array.isArray(value.recent);
}
