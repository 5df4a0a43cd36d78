import { createHash } from 'node:crypto';

/**
 * The grant's primary key: a UUID (version 5 layout) derived from the user and
 * the character, so the same grant delivered twice is inserted once.
 */
export function grantId(userId: string, characterId: string): string {
  const hash = createHash('sha1')
    .update('cachecast-grant\0')
    .update(userId)
    .update('\0')
    .update(characterId)
    .digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
