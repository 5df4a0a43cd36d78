/**
 * A lone UTF-16 surrogate. With the `u` flag a well-formed pair is one astral
 * code point (not `Cs`), so only unpaired halves match.
 */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Whether `text` is well-formed UTF-16, i.e. has no lone surrogate (what
 * `String.prototype.isWellFormed` tells, which is not in this project's ES2023
 * `lib`). A lone surrogate has no UTF-8 form: `encodeURIComponent` throws a
 * `URIError` on it, and `Buffer.from` silently turns it into U+FFFD.
 */
export function isWellFormedText(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}
