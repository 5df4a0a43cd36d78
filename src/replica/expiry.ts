import type { Clock, TimerHandle } from '../clock.ts';
import { bucketOf } from './digest.ts';
import type { Generation } from './generation.ts';
import type { Store } from './store.ts';

export interface ExpiryOptions<V> {
  clock: Clock;
  expireAt: (value: V) => number | undefined;
  /** Entries examined per tick (bounds the pause). */
  batch: number;
  intervalMs: number;
  serving(): Generation<V> | undefined;
}

/**
 * Frees expired entries incrementally, `batch` entries per tick, resuming where
 * the last tick stopped, so a million entries never block the event loop at
 * once. Reads never see an expired entry meanwhile: they check the expiry.
 */
export class Expiry<V> {
  readonly #o: ExpiryOptions<V>;
  #timer: TimerHandle | undefined;
  #iterator: Iterator<[string, V]> | undefined;
  #store: Store<V> | undefined;
  #closed = false;

  constructor(options: ExpiryOptions<V>) {
    this.#o = options;
  }

  start(): void {
    if (this.#closed) return;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.sweep();
      this.start();
    }, this.#o.intervalMs);
    this.#timer.unref?.();
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) this.#o.clock.clearTimeout(this.#timer);
  }

  /** Removes up to `batch` expired entries; returns how many. */
  sweep(): number {
    const gen = this.#o.serving();
    if (!gen) return 0;
    const store = gen.store;
    if (this.#store !== store || !this.#iterator) {
      this.#store = store;
      this.#iterator = store.entries();
    }
    const now = this.#o.clock.now();
    let removed = 0;
    for (let i = 0; i < this.#o.batch; i++) {
      const next = this.#iterator.next();
      if (next.done) {
        this.#iterator = undefined;
        // A whole pass done: digest buckets that expired everywhere can go too.
        gen.dropBucketsBefore(bucketOf(now) - 1);
        break;
      }
      const [key, value] = next.value;
      const at = this.#o.expireAt(value);
      if (at !== undefined && at <= now) {
        gen.expire(key);
        removed++;
      }
    }
    return removed;
  }
}
