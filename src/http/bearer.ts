import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Checks `Authorization: Bearer <token>` against the expected token in
 * constant time (both sides hashed first, so lengths leak nothing either).
 */
export function bearerMatches(header: string | undefined, expected: string): boolean {
  const match = /^Bearer +(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return false;
  return secretEquals(match[1], expected);
}

/** `given === expected` in constant time, whatever their lengths. */
export function secretEquals(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
