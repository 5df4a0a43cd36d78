/** One shared lookup; `detached` once an invalidation overtook it. */
export interface Flight<T> {
  readonly promise: Promise<T>;
  /** Set by `detach()`: the result is older than an invalidation and must not be cached. */
  readonly detached: boolean;
}

interface MutableFlight<T> {
  promise: Promise<T>;
  detached: boolean;
}

/**
 * Concurrent lookups of one key share one call (what the seed lacks: there,
 * 100 concurrent misses make 100 database queries). A key's flight ends when
 * its promise settles; errors are shared too, and never cached.
 *
 * `detach(key)` is for invalidation: callers arriving after it start a new
 * flight (they must see the write that caused the invalidation), and the
 * detached flight knows not to cache its now-stale result.
 */
export class SingleFlight<T> {
  readonly #flights = new Map<string, MutableFlight<T>>();

  get size(): number {
    return this.#flights.size;
  }

  /** Joins the key's flight, or starts one with `fn`. `joined` tells which. */
  run(key: string, fn: (flight: Flight<T>) => Promise<T>): { flight: Flight<T>; joined: boolean } {
    const current = this.#flights.get(key);
    if (current) return { flight: current, joined: true };
    const flight: MutableFlight<T> = { promise: undefined as unknown as Promise<T>, detached: false };
    this.#flights.set(key, flight);
    const forget = (): void => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key);
    };
    let promise: Promise<T>;
    try {
      promise = fn(flight);
    } catch (err) {
      promise = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    flight.promise = promise.finally(forget);
    return { flight, joined: false };
  }

  /** Marks the key's flight detached and lets the next caller start afresh. */
  detach(key: string): void {
    const flight = this.#flights.get(key);
    if (!flight) return;
    flight.detached = true;
    this.#flights.delete(key);
  }
}
