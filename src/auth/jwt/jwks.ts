import type { Clock, TimerHandle } from '../../clock.ts';
import { CachecastError, describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { redactUrl } from '../../util/redact.ts';
import type { VerificationKey } from './keys.ts';
import { parseJwks } from './keys.ts';
import type { JwtAlgorithm } from './keys.ts';

/** After any JWKS load, an unknown `kid` waits this long before it may trigger another. */
export const UNKNOWN_KID_COOLDOWN_MS = 30_000;
/** After a failed refresh, the next try comes this soon (or at the refresh period, if shorter). */
const RETRY_MS = 30_000;
const FETCH_TIMEOUT_MS = 5000;
const MAX_JWKS_BYTES = 512 * 1024;
const MAX_JWKS_KEYS = 100;

export interface JwksClientOptions {
  url: string;
  fetch: typeof fetch;
  clock: Clock;
  logger: Logger;
  algorithms: readonly JwtAlgorithm[];
  refreshMs: number;
  /** Receives each successfully loaded key set (never an empty one). */
  onKeys(keys: VerificationKey[]): void;
}

/**
 * Keeps a JWK Set from one configured URL current: one load in flight at a
 * time (shared by every caller), a periodic refresh, and refreshes requested
 * for unknown `kid`s held to one per cooldown so that tokens with random kids
 * cannot turn into a request flood against the key server. A failed refresh
 * keeps the previous keys.
 */
export class JwksClient {
  readonly #o: JwksClientOptions;
  #started: Promise<void> | undefined;
  #inflight: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #timer: TimerHandle | undefined;
  #lastLoadAt = -Infinity;
  #lastSkipped = '';
  #closed = false;

  constructor(options: JwksClientOptions) {
    this.#o = options;
  }

  /** The first load; rejects if it fails (and may then be called again). */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(new CachecastError('JWT_JWKS_FAILED', 'the verifier is closed'));
    this.#started ??= this.#load().then(
      () => this.#schedule(this.#o.refreshMs),
      (err: unknown) => {
        this.#started = undefined;
        throw err;
      },
    );
    return this.#started;
  }

  /** Asks for a reload because a token named a key we do not have; usually a no-op. */
  requestRefresh(): void {
    if (this.#started === undefined || this.#closed || this.#inflight !== undefined) return;
    if (this.#o.clock.now() - this.#lastLoadAt < UNKNOWN_KID_COOLDOWN_MS) return;
    this.#load().catch((err: unknown) => {
      this.#o.logger.warn({ err: describeError(err) }, 'JWKS refresh for an unknown kid failed');
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort?.abort();
    await this.#inflight?.catch(() => undefined);
  }

  #load(): Promise<void> {
    if (this.#inflight) return this.#inflight;
    this.#lastLoadAt = this.#o.clock.now();
    const load = this.#fetchKeys()
      .then((keys) => {
        if (!this.#closed) this.#o.onKeys(keys);
      })
      .finally(() => {
        this.#inflight = undefined;
      });
    this.#inflight = load;
    return load;
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#load().then(
        () => this.#schedule(this.#o.refreshMs),
        (err: unknown) => {
          this.#o.logger.warn({ err: describeError(err) }, 'JWKS refresh failed; keeping the previous keys');
          // Retry sooner than a long refresh period: the keys may have rotated.
          this.#schedule(Math.min(this.#o.refreshMs, RETRY_MS));
        },
      );
    }, ms);
    this.#timer.unref?.();
  }

  async #fetchKeys(): Promise<VerificationKey[]> {
    const controller = new AbortController();
    this.#abort = controller;
    try {
      const response = await this.#o.fetch(this.#o.url, {
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(FETCH_TIMEOUT_MS)]),
        // The URL is configuration: a redirect would let whoever answers it choose the keys' origin.
        redirect: 'error',
        headers: { accept: 'application/jwk-set+json, application/json' },
      });
      if (response.status !== 200) {
        await response.body?.cancel();
        throw new Error(`answered HTTP ${response.status}`);
      }
      const text = await readCapped(response, MAX_JWKS_BYTES);
      let document: unknown;
      try {
        document = JSON.parse(text);
      } catch {
        throw new Error('the answer is not JSON');
      }
      const { keys, skipped } = parseJwks(document, this.#o.algorithms, MAX_JWKS_KEYS);
      const skippedText = skipped.join('; ');
      if (skippedText !== this.#lastSkipped && skipped.length > 0) {
        this.#o.logger.warn({ skipped }, 'JWKS keys skipped');
      }
      this.#lastSkipped = skippedText;
      if (keys.length === 0) throw new Error('it holds no usable key for the allowed algorithms');
      return keys;
    } catch (err) {
      throw new CachecastError('JWT_JWKS_FAILED', `JWKS ${redactUrl(this.#o.url)}: ${describeError(err)}`, {
        cause: err,
      });
    } finally {
      if (this.#abort === controller) this.#abort = undefined;
    }
  }
}

/** Reads a body up to `max` bytes, refusing more without buffering it. */
async function readCapped(response: Response, max: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? 0);
  if (declared > max) {
    await response.body?.cancel();
    throw new Error(`the answer is larger than ${max} bytes`);
  }
  if (!response.body) return '';
  const reader = response.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw new Error(`the answer is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
