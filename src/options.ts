/**
 * The checks every options normalizer uses (STYLE: users pass optional fields
 * documented with `@default`; one `normalize*Options()` merges the defaults,
 * checks ranges and returns a fully resolved type). They throw at
 * construction, never later, with the option's name in the message.
 */
import { OptionRangeError, OptionTypeError } from './errors.ts';

/** Node's timers overflow past 2^31 - 1 ms (about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface NumberRange {
  /** @default 0 */
  min?: number;
  /** @default Infinity */
  max?: number;
  /** Whole numbers only. @default false */
  integer?: boolean;
}

/**
 * `value ?? fallback`, checked: a finite number (an integer if asked) in
 * [min, max]. A wrong type (or a fraction where an integer is asked) is an
 * OptionTypeError; an out-of-range number an OptionRangeError. A required
 * option passes `undefined` as its fallback.
 */
export function numberOption(
  name: string,
  value: unknown,
  fallback: number | undefined,
  range: NumberRange = {},
): number {
  const v = value ?? fallback;
  const { min = 0, max = Infinity, integer = false } = range;
  if (typeof v !== 'number' || Number.isNaN(v)) throw new OptionTypeError(`${name} must be a number`);
  if (integer && !Number.isInteger(v)) throw new OptionTypeError(`${name} must be an integer`);
  if (!Number.isFinite(v) || v < min || v > max) {
    throw new OptionRangeError(
      max === Infinity ? `${name} must be a number >= ${min}` : `${name} must be from ${min} to ${max}`,
    );
  }
  return v;
}

/** A duration in ms a timer can hold: >= min (default 0) and at most MAX_TIMER_MS. */
export function msOption(name: string, value: unknown, fallback: number, min = 0): number {
  return numberOption(name, value, fallback, { min, max: MAX_TIMER_MS });
}

/** A whole number >= min (default 1). */
export function countOption(name: string, value: unknown, fallback: number, min = 1, max = Infinity): number {
  return numberOption(name, value, fallback, { min, max, integer: true });
}

/**
 * `value ?? fallback`, checked: a safe integer in [min, max]. Anything else,
 * a fraction or a non-number too, is an OptionRangeError: for the options
 * whose callers have always been told RangeError for every bad value.
 */
export function integerRangeOption(
  name: string,
  value: unknown,
  fallback: number | undefined,
  min: number,
  max = Infinity,
): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new OptionRangeError(
      max === Infinity
        ? `${name} must be an integer >= ${min}`
        : `${name} must be an integer from ${min} to ${max}`,
    );
  }
  return v;
}

export function stringOption(name: string, value: unknown, fallback?: string): string {
  const v = value ?? fallback;
  if (typeof v !== 'string' || v.length === 0)
    throw new OptionTypeError(`${name} must be a non-empty string`);
  return v;
}

export function oneOfOption<T extends string>(
  name: string,
  value: unknown,
  allowed: readonly T[],
  fallback: T,
): T {
  const v = value ?? fallback;
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new OptionRangeError(`${name} must be one of ${allowed.join(', ')}`);
  }
  return v as T;
}

export function objectOption(name: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) throw new OptionTypeError(`${name} must be an object`);
  return value as Record<string, unknown>;
}
