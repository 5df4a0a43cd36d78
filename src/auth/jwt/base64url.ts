/**
 * Strict base64url (RFC 7515 section 2): the URL-safe alphabet only, no
 * padding, no whitespace, and canonical (the unused low bits of the last
 * character zero), so a byte string has exactly one encoding and a signature
 * cannot be re-spelled into a different token string that still verifies.
 *
 * Node's decoder skips characters it does not know and accepts padding, so a
 * segment counts only if re-encoding its bytes gives back the same text. That
 * round trip runs in native code and is faster than checking characters one by
 * one in JavaScript, and the decoded bytes are needed anyway.
 */
export function decodeBase64urlStrict(segment: string): Buffer | undefined {
  if (segment.length === 0) return undefined;
  const bytes = Buffer.from(segment, 'base64url');
  return bytes.toString('base64url') === segment ? bytes : undefined;
}

export function encodeBase64url(data: string | Uint8Array): string {
  const bytes =
    typeof data === 'string'
      ? Buffer.from(data, 'utf8')
      : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return bytes.toString('base64url');
}
