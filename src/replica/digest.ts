import { hash } from 'node:crypto';

/**
 * Anti-entropy by content: a dataset's digest is the XOR of a 64-bit hash of
 * every entry's canonical text (`Dataset.digestText`). XOR makes it
 * incremental (a change XORs the old entry out and the new one in) and
 * order-free, so the source of truth keeps it atomically with every write (a
 * Redis script, a PostgreSQL trigger) and each replica keeps the same one from
 * the changes it applies. Two sides that agree on (epoch, version, digest)
 * hold the same entries, whatever events were lost, forged or reordered.
 *
 * Entries that expire (the blacklist) leave both sides without an event, at
 * slightly different moments. Their hashes are kept per expiry bucket of
 * DIGEST_BUCKET_S seconds, and comparisons cover only the buckets that start
 * at least one bucket in the future (`comparableFrom`), which no side has
 * begun to expire. Datasets without expiry have one bucket, 0.
 *
 * The hash is whatever the source can compute next to its data: Redis scripts
 * have SHA-1 (`redis.sha1hex`), PostgreSQL has md5 without extensions. It is
 * the first 8 bytes of that hash of the UTF-8 text, as hex (16 digits).
 */
export type DigestAlgorithm = 'sha1' | 'md5';

export const DIGEST_BUCKET_S = 10;
export const ZERO_DIGEST = '0000000000000000';
/** The only bucket of a dataset whose entries do not expire. */
export const NO_EXPIRY_BUCKET = 0;

/** A digest value on the wire: 16 lowercase hex digits. */
export function isDigestHex(value: unknown): value is string {
  return typeof value === 'string' && /^[0-9a-f]{16}$/.test(value);
}

/** The entry hash as two unsigned 32-bit lanes (numbers stay small integers; no BigInt on the apply path). */
export function entryHash(algorithm: DigestAlgorithm, text: string): [number, number] {
  const bytes = hash(algorithm, text, 'buffer');
  return [bytes.readUInt32BE(0), bytes.readUInt32BE(4)];
}

/** The bucket an entry expiring at `expireAtMs` belongs to. */
export function bucketOf(expireAtMs: number): number {
  return Math.floor(expireAtMs / 1000 / DIGEST_BUCKET_S);
}

/**
 * The first bucket both sides can compare at `nowMs`: the current bucket is
 * expiring, and the next one may be, on a clock a little ahead; from the one
 * after, nothing has expired anywhere.
 */
export function comparableFrom(nowMs: number): number {
  return bucketOf(nowMs) + 2;
}

function toHex(hi: number, lo: number): string {
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

function fromHex(hex: string): [number, number] {
  return [parseInt(hex.slice(0, 8), 16) >>> 0, parseInt(hex.slice(8, 16), 16) >>> 0];
}

/** XOR of two digests in hex. */
export function xorHex(a: string, b: string): string {
  const [ah, al] = fromHex(a);
  const [bh, bl] = fromHex(b);
  return toHex(ah ^ bh, al ^ bl);
}

/** One change to a digest: `hi`/`lo` XORed into `bucket`. */
export interface DigestDelta {
  bucket: number;
  hi: number;
  lo: number;
}

/** A digest kept per bucket. */
export class Digest {
  readonly #hi = new Map<number, number>();
  readonly #lo = new Map<number, number>();

  /** Buckets from a source's snapshot (bucket -> hex). */
  static from(buckets: Iterable<readonly [number, string]>): Digest {
    const digest = new Digest();
    for (const [bucket, hex] of buckets) {
      const [hi, lo] = fromHex(hex);
      digest.xor(bucket, hi, lo);
    }
    return digest;
  }

  xor(bucket: number, hi: number, lo: number): void {
    const h = ((this.#hi.get(bucket) ?? 0) ^ hi) >>> 0;
    const l = ((this.#lo.get(bucket) ?? 0) ^ lo) >>> 0;
    if (h === 0 && l === 0) {
      this.#hi.delete(bucket);
      this.#lo.delete(bucket);
      return;
    }
    this.#hi.set(bucket, h);
    this.#lo.set(bucket, l);
  }

  /** The XOR of every bucket >= `fromBucket`, as hex. */
  combined(fromBucket = -Infinity): string {
    let hi = 0;
    let lo = 0;
    for (const [bucket, h] of this.#hi) {
      if (bucket < fromBucket) continue;
      hi ^= h;
      lo ^= this.#lo.get(bucket)!;
    }
    return toHex(hi, lo);
  }

  /** Forgets buckets before `bucket` (they have expired everywhere). */
  dropBefore(bucket: number): void {
    for (const b of this.#hi.keys()) {
      if (b >= bucket) continue;
      this.#hi.delete(b);
      this.#lo.delete(b);
    }
  }

  get buckets(): number {
    return this.#hi.size;
  }

  /** Every non-zero bucket as [bucket, hex] (what a source hands a loading replica). */
  toBuckets(): Array<[number, string]> {
    return [...this.#hi].map(([bucket, hi]) => [bucket, toHex(hi, this.#lo.get(bucket)!)]);
  }
}

/** The combined digest of `deltas` restricted to buckets >= `fromBucket` (hex). */
export function combineDeltas(deltas: Iterable<DigestDelta>, fromBucket: number): string {
  let hi = 0;
  let lo = 0;
  for (const d of deltas) {
    if (d.bucket < fromBucket) continue;
    hi ^= d.hi;
    lo ^= d.lo;
  }
  return toHex(hi, lo);
}
