import type { BusState } from './bus.ts';

/** Tracks a bus's state and tells listeners about changes (only real changes). */
export class StateEmitter {
  #state: BusState = 'connecting';
  readonly #listeners = new Set<(state: BusState) => void>();

  get state(): BusState {
    return this.#state;
  }

  set(state: BusState): void {
    if (this.#state === state || this.#state === 'closed') return;
    this.#state = state;
    for (const listener of [...this.#listeners]) listener(state);
  }

  on(listener: (state: BusState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
