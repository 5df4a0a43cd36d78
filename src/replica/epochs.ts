import type { VersionedEvent } from './generation.ts';

/** Epochs left behind, remembered so their late events are dropped, not mistaken for a new epoch. */
const RETIRED = 8;

/**
 * What a replica knows of epochs other than its own: the ones it left (their
 * late events are dropped, `events_stale_epoch`), and events of one it does
 * not know yet (a source reset: the load that reveals the new epoch replays
 * them). Bounded both ways.
 */
export class EpochBook<V> {
  readonly #retired: string[] = [];
  readonly #waiting = new Map<string, Array<VersionedEvent<V>>>();
  #waitingCount = 0;

  constructor(private readonly maxWaiting: number) {}

  isRetired(epoch: string): boolean {
    return this.#retired.includes(epoch);
  }

  /** A generation of `next` replaced one of `previous`. */
  moved(previous: string | undefined, next: string): void {
    if (previous !== undefined && previous !== next) {
      this.#retired.push(previous);
      if (this.#retired.length > RETIRED) this.#retired.shift();
    }
    const back = this.#retired.indexOf(next);
    if (back >= 0) this.#retired.splice(back, 1);
  }

  /** Keeps an event of an unknown epoch for the load that may reveal it (dropped past the bound). */
  hold(event: VersionedEvent<V>): void {
    if (this.#waitingCount >= this.maxWaiting) return;
    let list = this.#waiting.get(event.epoch!);
    if (!list) this.#waiting.set(event.epoch!, (list = []));
    list.push(event);
    this.#waitingCount++;
  }

  /** The events held for `epoch`; every other epoch's are forgotten. */
  take(epoch: string): Array<VersionedEvent<V>> {
    const events = this.#waiting.get(epoch) ?? [];
    this.#waiting.clear();
    this.#waitingCount = 0;
    return events;
  }
}
