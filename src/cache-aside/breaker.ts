import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { integerRangeOption } from '../options.ts';
import type { RedisErrorKind } from './redis-errors.ts';

/**
 * Seed 003's Redis circuit breaker as an explicit state machine:
 *
 * ```
 *          threshold failures in the window,
 *          spanning more than one cache key             openMs elapsed:
 *  closed ─────────────────────────────────► open ──────────────────────► half_open
 *    ▲                                        ▲       one trial call          │
 *    │                                        └───────── trial fails ─────────┤
 *    └──────────────────────────────────────────────── trial succeeds ────────┘
 * ```
 *
 * - Only connection, timeout, out-of-memory and cluster-down errors count
 *   (the seed's `target_exc_types`); anything else leaves the breaker alone.
 *   A `dropped` call (lost with a connection dropped for another call's
 *   deadline) is no answer at all: it never counts, and a dropped trial
 *   hands the trial to the next caller.
 * - Failures older than the window are dropped; at most
 *   max(100, threshold) are kept (the seed's `deque(maxlen=100)`).
 * - It opens when `failureThreshold` failures lie within the window **and**
 *   they span more than one cache key, so one bad key (a huge value, a hot
 *   key) cannot cut every key off Redis (seed §8-3).
 * - While open, `acquire()` refuses: no Redis call is made at all.
 * - After `openMs`, exactly one caller gets a trial permit (`half_open`); its
 *   outcome closes the breaker or opens it for another `openMs`.
 * - A success resets the failure count (the seed's `_record_redis_success`).
 *
 * Each process has its own breaker (seed §8-1): instances protect themselves
 * independently, and one instance's view of Redis never trips another's.
 */
export type BreakerState =
  | { readonly kind: 'closed' }
  | { readonly kind: 'open'; readonly since: number }
  | { readonly kind: 'half_open'; readonly since: number };

export type BreakerStateName = BreakerState['kind'];

export interface BreakerSettings {
  /** Failures within the window that open the breaker (CACHE_BREAKER_THRESHOLD). @default 10 */
  failureThreshold: number;
  /** The failure window (CACHE_BREAKER_WINDOW_MS). @default 60000 */
  failureWindowMs: number;
  /** How long it stays open before a trial call (CACHE_BREAKER_OPEN_MS). @default 180000 */
  openMs: number;
}

export const DEFAULT_BREAKER_SETTINGS: Readonly<BreakerSettings> = Object.freeze({
  failureThreshold: 10,
  failureWindowMs: 60_000,
  openMs: 180_000,
});

/** The kinds that count toward opening (the seed's `target_exc_types`). */
export const COUNTED_ERROR_KINDS: ReadonlySet<RedisErrorKind> = new Set([
  'connection',
  'timeout',
  'out_of_memory',
  'cluster_down',
]);

/** A transition, for alerts and logs. */
export interface BreakerTransition {
  from: BreakerStateName;
  to: BreakerStateName;
  /** Why: `threshold`, `trial_failed`, `trial_succeeded`, `open_elapsed`, `reset`. */
  reason: string;
  stats: BreakerStats;
}

/**
 * The seed's `get_circuit_breaker_stats()` with the seed's names and units
 * (seconds), plus the state and millisecond forms.
 */
export interface BreakerStats {
  state: BreakerStateName;
  /** True while open or half-open (Redis is skipped, bar the one trial call). */
  is_open: boolean;
  /** Counted failures within the window now. */
  recent_fail_count: number;
  /** Distinct cache keys among them. */
  recent_fail_keys: number;
  failure_threshold: number;
  /** Seconds, as the seed. */
  failure_window_size: number;
  /** Seconds the breaker stays open, as the seed. */
  timeout: number;
  /** Unix seconds of the last counted failure, null if none yet. */
  last_failure_time: number | null;
  failure_window_ms: number;
  timeout_ms: number;
  /** When the current open period began (ISO), null while closed. */
  opened_at: string | null;
  times_opened: number;
}

/**
 * What a caller holds for one Redis call; it reports the outcome once. Only a
 * trial permit's outcome moves the breaker out of `half_open`.
 */
export interface BreakerPermit {
  readonly trial: boolean;
  /** Redis answered. */
  success(): void;
  /**
   * The call failed: counted when `kind` is one of COUNTED_ERROR_KINDS, under
   * `key` (the concrete cache key, for the several-keys rule). Returns whether
   * it counted. An uncounted error on a trial is Redis answering: it closes;
   * except `dropped` (no answer either way): the next caller gets the trial.
   */
  failure(key: string, kind: RedisErrorKind): boolean;
}

export interface CircuitBreakerOptions extends Partial<BreakerSettings> {
  /** @default the system clock */
  clock?: Clock;
  /** Called after every transition (alerts, logs, flushing deferred work). Must not throw. */
  onTransition?: (transition: BreakerTransition) => void;
}

interface Failure {
  at: number;
  key: string;
}

export function normalizeBreakerSettings(
  settings: Partial<BreakerSettings>,
  base: Readonly<BreakerSettings> = DEFAULT_BREAKER_SETTINGS,
): BreakerSettings {
  const out = { ...base };
  const check = (name: keyof BreakerSettings, min: number, max: number): void => {
    const value = settings[name];
    if (value !== undefined) out[name] = integerRangeOption(name, value, undefined, min, max);
  };
  check('failureThreshold', 1, 100_000);
  check('failureWindowMs', 1, 7 * 24 * 3_600_000);
  check('openMs', 1, 7 * 24 * 3_600_000);
  return out;
}

export class CircuitBreaker {
  #settings: BreakerSettings;
  #state: BreakerState = { kind: 'closed' };
  #failures: Failure[] = [];
  #lastFailureAt: number | undefined;
  #timesOpened = 0;
  /** Half-open and the trial was dropped: the next caller gets a new trial. */
  #trialLost = false;
  readonly #clock: Clock;
  readonly #onTransition: ((t: BreakerTransition) => void) | undefined;

  constructor(options: CircuitBreakerOptions = {}) {
    this.#settings = normalizeBreakerSettings(options);
    this.#clock = options.clock ?? systemClock;
    this.#onTransition = options.onTransition;
  }

  get state(): BreakerState {
    return this.#state;
  }

  get settings(): Readonly<BreakerSettings> {
    return { ...this.#settings };
  }

  /**
   * Changes the settings at run time (the seed's `set_circuit_breaker_settings`).
   * Validated as a whole before anything changes; takes effect at the next
   * decision (an open breaker's remaining time follows a new `openMs`).
   */
  setSettings(settings: Partial<BreakerSettings>): void {
    this.#settings = normalizeBreakerSettings(settings, this.#settings);
    this.#prune(this.#clock.now());
  }

  /**
   * Asks to make one Redis call. Closed: a permit. Open: null, unless
   * `openMs` has elapsed, in which case this caller gets the single trial
   * permit and the breaker is half-open. Half-open: null (the trial is out).
   */
  acquire(): BreakerPermit | null {
    const now = this.#clock.now();
    switch (this.#state.kind) {
      case 'closed':
        return this.#permit(false);
      case 'open':
        if (now - this.#state.since < this.#settings.openMs) return null;
        this.#transition({ kind: 'half_open', since: now }, 'open_elapsed');
        return this.#permit(true);
      case 'half_open':
        // A trial that never reported (it cannot, with every call bounded by a
        // timeout, but a stuck breaker would be worse) is replaced after openMs.
        if (!this.#trialLost && now - this.#state.since < this.#settings.openMs) return null;
        this.#trialLost = false;
        this.#state = { kind: 'half_open', since: now };
        return this.#permit(true);
    }
  }

  /** Whether a call would be refused right now (no state change). */
  get refusing(): boolean {
    const s = this.#state;
    if (s.kind === 'closed' || (s.kind === 'half_open' && this.#trialLost)) return false;
    return this.#clock.now() - s.since < this.#settings.openMs;
  }

  stats(): BreakerStats {
    const now = this.#clock.now();
    this.#prune(now);
    const s = this.#state;
    return {
      state: s.kind,
      is_open: s.kind !== 'closed',
      recent_fail_count: this.#failures.length,
      recent_fail_keys: this.#distinctKeys(),
      failure_threshold: this.#settings.failureThreshold,
      failure_window_size: this.#settings.failureWindowMs / 1000,
      timeout: this.#settings.openMs / 1000,
      last_failure_time: this.#lastFailureAt === undefined ? null : this.#lastFailureAt / 1000,
      failure_window_ms: this.#settings.failureWindowMs,
      timeout_ms: this.#settings.openMs,
      opened_at: s.kind === 'closed' ? null : new Date(s.since).toISOString(),
      times_opened: this.#timesOpened,
    };
  }

  #permit(trial: boolean): BreakerPermit {
    let reported = false;
    return {
      trial,
      success: () => {
        if (reported) return;
        reported = true;
        this.#onSuccess(trial);
      },
      failure: (key, kind) => {
        if (reported) return false;
        reported = true;
        return this.#onFailure(trial, key, kind);
      },
    };
  }

  #onSuccess(trial: boolean): void {
    if (this.#failures.length > 0) this.#failures = [];
    if (trial && this.#state.kind === 'half_open') this.#transition({ kind: 'closed' }, 'trial_succeeded');
  }

  #onFailure(trial: boolean, key: string, kind: RedisErrorKind): boolean {
    if (kind === 'dropped') {
      // Neither Redis answering nor Redis failing this call: a trial is as if it had not been made.
      if (trial && this.#state.kind === 'half_open') this.#trialLost = true;
      return false;
    }
    if (!COUNTED_ERROR_KINDS.has(kind)) {
      // Redis answered: on a trial that is enough to close; otherwise nothing changes.
      if (trial && this.#state.kind === 'half_open') this.#onSuccess(true);
      return false;
    }
    const now = this.#clock.now();
    this.#lastFailureAt = now;
    this.#failures.push({ at: now, key });
    this.#prune(now);
    const cap = Math.max(100, this.#settings.failureThreshold);
    if (this.#failures.length > cap) this.#failures.splice(0, this.#failures.length - cap);
    if (trial && this.#state.kind === 'half_open') {
      this.#transition({ kind: 'open', since: now }, 'trial_failed');
    } else if (
      this.#state.kind === 'closed' &&
      this.#failures.length >= this.#settings.failureThreshold &&
      this.#distinctKeys() > 1
    ) {
      this.#timesOpened++;
      this.#transition({ kind: 'open', since: now }, 'threshold');
    }
    return true;
  }

  #prune(now: number): void {
    const oldest = now - this.#settings.failureWindowMs;
    let drop = 0;
    while (drop < this.#failures.length && this.#failures[drop]!.at <= oldest) drop++;
    if (drop > 0) this.#failures.splice(0, drop);
  }

  #distinctKeys(): number {
    const first = this.#failures[0]?.key;
    if (first === undefined) return 0;
    // Cheap common case: the answer the breaker needs is only "one or more than one".
    if (this.#failures.every((f) => f.key === first)) return 1;
    return new Set(this.#failures.map((f) => f.key)).size;
  }

  #transition(next: BreakerState, reason: string): void {
    const from = this.#state.kind;
    this.#state = next;
    this.#trialLost = false;
    try {
      this.#onTransition?.({ from, to: next.kind, reason, stats: this.stats() });
    } catch {
      // A listener's bug must not break the caller's Redis call.
    }
  }
}
