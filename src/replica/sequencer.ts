/**
 * Orders versioned events by version, never by arrival. Several writers (auth
 * instances, relays) publish in any order, and a resync rebases onto a
 * snapshot with events already waiting: both paths feed this one structure.
 *
 * `offer()` drops what is at or below the released version, or already held
 * (duplicates, redeliveries); `next()` pops the event that continues the
 * sequence. Whatever stays held sits past a gap: the caller waits `gapWaitMs`
 * for the missing versions before it calls the gap a lost event.
 */
export class Sequencer<E extends { readonly version: number }> {
  #version: number;
  readonly #held = new Map<number, E>();
  /** When each held version arrived: a gap is as old as its oldest waiting event. */
  readonly #heldAt = new Map<number, number>();

  constructor(version: number) {
    this.#version = version;
  }

  /** The last version released in order. */
  get version(): number {
    return this.#version;
  }

  get held(): number {
    return this.#held.size;
  }

  /** False for a duplicate (already released or held). `now`: when it arrived. */
  offer(event: E, now: number): boolean {
    if (event.version <= this.#version || this.#held.has(event.version)) return false;
    this.#held.set(event.version, event);
    this.#heldAt.set(event.version, now);
    return true;
  }

  /** When the longest-waiting held event arrived, or undefined when nothing waits. */
  oldestHeldAt(): number | undefined {
    let oldest: number | undefined;
    for (const at of this.#heldAt.values()) if (oldest === undefined || at < oldest) oldest = at;
    return oldest;
  }

  /** The next event in version order, if it has arrived. */
  next(): E | undefined {
    const event = this.#held.get(this.#version + 1);
    if (event === undefined) return undefined;
    this.#held.delete(event.version);
    this.#heldAt.delete(event.version);
    this.#version = event.version;
    return event;
  }

  /** The event that would come next, without taking it. */
  peek(): E | undefined {
    return this.#held.get(this.#version + 1);
  }

  /** Held events, lowest version first (for a rebase, and for diagnostics). */
  heldEvents(): E[] {
    return [...this.#held.values()].sort((a, b) => a.version - b.version);
  }

  /** Removes and returns the held events above `version` that arrived by `arrivedBy`. */
  dropAbove(version: number, arrivedBy = Infinity): E[] {
    const dropped: E[] = [];
    for (const [v, event] of this.#held) {
      if (v <= version || this.#heldAt.get(v)! > arrivedBy) continue;
      this.#held.delete(v);
      this.#heldAt.delete(v);
      dropped.push(event);
    }
    return dropped;
  }

  /** The lowest held version, or undefined when nothing waits. */
  firstHeld(): number | undefined {
    let first: number | undefined;
    for (const version of this.#held.keys()) if (first === undefined || version < first) first = version;
    return first;
  }
}
