import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import { CachecastError } from '../errors.ts';
import { msOption } from '../options.ts';

/** How one part is closed: drains what it holds, then resolves. */
export type CloseFn = () => Promise<void>;

export interface LifecycleOptions {
  /**
   * Told about a part whose close failed or exceeded its bound (a
   * `CachecastError` with code `CLOSE_TIMEOUT`); the parts after it still close.
   */
  onCloseError: (part: string, err: unknown) => void;
  /** How long one part's close may take before the next one starts. @default 30_000 */
  partTimeoutMs?: number;
  /** @default systemClock */
  clock?: Clock;
}

export interface PartOptions {
  /** This part's bound instead of the lifecycle's `partTimeoutMs`. */
  timeoutMs?: number;
}

interface Part {
  name: string;
  close: CloseFn;
  timeoutMs: number;
}

/**
 * The parts of a running thing, added in the order they start and closed in
 * reverse: what depends on a part closes before it. `close()` is idempotent;
 * a part that fails or hangs is reported and the rest still close, so one
 * stuck part cannot keep the others open.
 *
 * A part added with `addOuter()` encloses all the others (a health port that
 * must answer until the end): the outer parts close after every inner one,
 * whenever they were added, again in reverse of their own order.
 */
export class Lifecycle {
  readonly #onCloseError: LifecycleOptions['onCloseError'];
  readonly #timeoutMs: number;
  readonly #clock: Clock;
  readonly #inner: Part[] = [];
  readonly #outer: Part[] = [];
  #closing: Promise<void> | undefined;

  constructor(options: LifecycleOptions) {
    this.#onCloseError = options.onCloseError;
    this.#timeoutMs = msOption('partTimeoutMs', options.partTimeoutMs, 30_000, 1);
    this.#clock = options.clock ?? systemClock;
  }

  /** Adds a part that has just started (or is about to): it closes before every part added earlier. */
  add(name: string, close: CloseFn, options: PartOptions = {}): void {
    this.#keep(this.#inner, this.#part(name, close, options));
  }

  /** Adds a part that closes after every `add()`ed part. */
  addOuter(name: string, close: CloseFn, options: PartOptions = {}): void {
    this.#keep(this.#outer, this.#part(name, close, options));
  }

  /** True once close() has been called. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** Closes the inner parts newest first, then the outer ones newest first. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const order = [...this.#inner.reverse(), ...this.#outer.reverse()];
      this.#inner.length = 0;
      this.#outer.length = 0;
      for (const part of order) await this.#closePart(part);
    })();
    return this.#closing;
  }

  /** A part added once closing has begun is closed at once: a start that raced close() leaves nothing open. */
  #keep(list: Part[], part: Part): void {
    if (this.#closing) void this.#closePart(part);
    else list.push(part);
  }

  #part(name: string, close: CloseFn, options: PartOptions): Part {
    const timeoutMs =
      options.timeoutMs === undefined
        ? this.#timeoutMs
        : msOption(`${name} timeoutMs`, options.timeoutMs, 0, 1);
    return { name, close, timeoutMs };
  }

  async #closePart(part: Part): Promise<void> {
    let timer: ReturnType<Clock['setTimeout']> | undefined;
    const bound = new Promise<never>((_, reject) => {
      timer = this.#clock.setTimeout(() => {
        reject(new CachecastError('CLOSE_TIMEOUT', `${part.name} did not close within ${part.timeoutMs} ms`));
      }, part.timeoutMs);
    });
    try {
      // A close that throws synchronously is a failure like any other.
      await Promise.race([Promise.resolve().then(part.close), bound]);
    } catch (err) {
      this.#onCloseError(part.name, err);
    } finally {
      this.#clock.clearTimeout(timer!);
    }
  }
}
