import type { Bus } from '../../bus/bus.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { BlacklistKeys } from '../../datasets/blacklist.ts';
import { BLACKLIST_KEYS, BLACKLIST_MAX_EXPIRE_AT_S, BLACKLIST_TOPIC } from '../../datasets/blacklist.ts';
import { describeError } from '../../errors.ts';
import { encodeEvent } from '../../events/codec.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { parseRevocationEntry } from '../../sources/blacklist-source.ts';
import { newEpoch } from '../../sources/memory-source.ts';
import { REVOKE_SCRIPT } from '../../sources/redis-scripts.ts';
import { DIGEST_BUCKET_S } from '../../replica/digest.ts';
import type { RedisClient } from '../../redis/client.ts';
import { backoffDelay } from '../../util/backoff.ts';
import { Pauses } from '../../util/pauses.ts';

/** Revocations committed in Redis whose event is not yet confirmed by the broker. */
export const BLACKLIST_OUTBOX_KEY = BLACKLIST_KEYS.pendingKey;

/** Recent revocations kept for replicas that lost an event (a read, instead of a full load). */
const LOG_SIZE = 10_000;

interface Pending {
  entry: string;
  version: number;
  expireAt: number;
  jti: string;
  /** The epoch it was committed in; unknown for entries left by an earlier release. */
  epoch: string | undefined;
}

function parseEntry(entry: string, epoch: string | undefined): Pending | undefined {
  const parsed = parseRevocationEntry(entry);
  return parsed && { entry, epoch, ...parsed };
}

export interface RevocationsOptions {
  redis: RedisClient;
  bus: Bus;
  logger?: Logger;
  clock?: Clock;
  eventSecret?: string | undefined;
  /** How long a logout waits for the broker's confirm before leaving the event to the drainer. @default 2000 */
  publishWaitMs?: number;
  /** The blacklist's Redis keys. @default BLACKLIST_KEYS */
  keys?: BlacklistKeys;
  /**
   * Seconds a revocation outlives the token's `exp`: verifiers accept a token
   * until exp + their clock skew, so the revocation must last at least as long.
   * Set it to JWT_CLOCK_SKEW_S + 1. @default 31
   */
  holdAfterExpiryS?: number;
}

export interface RevokeResult {
  /** False when the token was already revoked (nothing changed). */
  added: boolean;
  version: number | undefined;
  /** Whether the broker confirmed the event before revoke() returned. */
  published: boolean;
}

/**
 * Writes revocations (seed 001's logout) so that none is lost by any fault:
 * the Redis script commits the key, the version and a pending event together;
 * the event is published with confirms and removed from the pending list only
 * after the broker's ack. A drainer retries what is left (broker down, or an
 * auth process killed between commit and publish: any auth instance drains it).
 */
export class Revocations {
  readonly #redis: RedisClient;
  readonly #bus: Bus;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #secret: string | undefined;
  readonly #publishWaitMs: number;
  readonly #keys: BlacklistKeys;
  readonly #outboxKey: string;
  readonly #holdAfterExpiryS: number;
  readonly #pauses: Pauses;
  #draining: Promise<void> | undefined;
  #drainAgain = false;
  #loop: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #unlisten: (() => void) | undefined;
  #published = 0;
  #publishFailures = 0;

  constructor(options: RevocationsOptions) {
    this.#redis = options.redis;
    this.#bus = options.bus;
    this.#logger = options.logger ?? silentLogger;
    this.#clock = options.clock ?? systemClock;
    this.#secret = options.eventSecret;
    this.#publishWaitMs = options.publishWaitMs ?? 2000;
    this.#keys = options.keys ?? BLACKLIST_KEYS;
    this.#outboxKey = this.#keys.pendingKey;
    this.#holdAfterExpiryS = options.holdAfterExpiryS ?? 31;
    if (!Number.isInteger(this.#holdAfterExpiryS) || this.#holdAfterExpiryS < 0) {
      throw new RangeError('holdAfterExpiryS must be an integer >= 0');
    }
    this.#pauses = new Pauses(this.#clock);
  }

  /** Starts the drainer: events left by a previous process, or by an outage, go out. */
  start(): void {
    if (this.#loop) return;
    this.#unlisten = this.#bus.onStateChange((state) => {
      if (state === 'up') this.#kick();
    });
    this.#loop = this.#drainLoop();
  }

  /**
   * Revokes the token `jti` whose `exp` claim is `exp` (unix seconds, maybe
   * fractional). Resolves once Redis has committed; throws only when Redis did
   * not (then nothing changed). A repeated logout changes nothing and publishes
   * nothing: if the first one's event is still pending, a drainer sends it.
   */
  async revoke(jti: string, exp: number): Promise<RevokeResult> {
    // Whole seconds for EXAT, and past every verifier's skew window (a key with an
    // EXAT in the past would vanish at once while the token still verifies).
    const now = Math.floor(this.#clock.now() / 1000);
    // Capped where replicas can store it exactly (the digest hashes the same number on both sides).
    const expireAt = Math.min(
      BLACKLIST_MAX_EXPIRE_AT_S,
      Math.max(now + 1, Math.ceil(exp) + this.#holdAfterExpiryS),
    );
    const k = this.#keys;
    const keys = [k.prefix + jti, k.versionKey, k.pendingKey, k.epochKey, k.digestKey, k.logKey];
    const result = await this.#redis.eval(REVOKE_SCRIPT, {
      keys,
      arguments: [String(expireAt), jti, newEpoch(), String(LOG_SIZE), String(DIGEST_BUCKET_S)],
    });
    if (!Array.isArray(result)) return { added: false, version: undefined, published: false };
    const [version, epoch] = result as [number, string];
    const pending: Pending = { entry: `${version}:${expireAt}:${jti}`, version, expireAt, jti, epoch };
    return { added: true, version, published: await this.#publishSoon(pending) };
  }

  get stats() {
    return { published: this.#published, publish_failures: this.#publishFailures };
  }

  /** Pending events in Redis (for /revocations and tests). */
  async pendingCount(): Promise<number> {
    return this.#redis.lLen(this.#outboxKey);
  }

  async #publishSoon(pending: Pending): Promise<boolean> {
    if (this.#bus.state !== 'up') {
      this.#kick();
      return false;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#publishWaitMs);
    });
    try {
      const published = await Promise.race([this.#publish(pending), timeout]);
      if (!published) this.#kick();
      return published;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes one event and clears it from the pending list; false on failure (it stays pending). */
  async #publish(pending: Pending): Promise<boolean> {
    const payload = { type: 'blacklist_added', jti: pending.jti, expire_at: pending.expireAt };
    const envelope = { version: pending.version, epoch: pending.epoch, published_at: this.#clock.now() };
    const { body, headers } = encodeEvent(payload, envelope, this.#secret);
    try {
      await this.#bus.publish(BLACKLIST_TOPIC, body, { headers });
      this.#published++;
    } catch (err) {
      this.#publishFailures++;
      this.#logger.warn(
        { err: describeError(err), version: pending.version },
        'revocation event not published yet',
      );
      return false;
    }
    try {
      await this.#redis.lRem(this.#outboxKey, 1, pending.entry);
    } catch {
      // Published but still listed: the drainer publishes it again, a harmless duplicate.
    }
    return true;
  }

  /** Asks the drainer for a pass now (another instance's revocation waits unpublished). */
  drainSoon(): void {
    this.#kick();
  }

  #kick(): void {
    this.#drainAgain = true;
    this.#pauses.wake();
  }

  /** One pass over the pending list, oldest first. Returns how many are left. */
  async drainOnce(): Promise<number> {
    this.#draining ??= (async () => {
      try {
        const [entries, epoch] = await Promise.all([
          this.#redis.lRange(this.#outboxKey, 0, 499),
          this.#redis.get(this.#keys.epochKey),
        ]);
        for (const entry of entries) {
          if (this.#closed) break;
          // Pending entries are in the current epoch: a restart that lost the epoch lost them too.
          const pending = parseEntry(entry, epoch ?? undefined);
          if (!pending) {
            this.#logger.warn({}, 'dropping a malformed pending revocation event');
            await this.#redis.lRem(this.#outboxKey, 1, entry);
            continue;
          }
          if (!(await this.#publish(pending))) break;
        }
      } finally {
        this.#draining = undefined;
      }
    })();
    await this.#draining;
    return this.#redis.lLen(this.#outboxKey);
  }

  async #drainLoop(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      this.#drainAgain = false;
      let left = 0;
      try {
        left = this.#bus.state === 'up' ? await this.drainOnce() : 1;
        failures = left > 0 ? failures + 1 : 0;
      } catch (err) {
        failures++;
        this.#logger.warn({ err: describeError(err) }, 'revocation drain failed');
      }
      if (this.#closed) return;
      // Idle: look again now and then (another auth instance may have died with events pending).
      const delay = left > 0 || failures > 0 ? backoffDelay(Math.min(failures, 6), 200, 5000) : 5000;
      // A kick (a new logout, the bus back up) cuts an idle wait short, never a backoff.
      if (!this.#drainAgain || failures > 0) await this.#pauses.pause(delay);
    }
  }

  /** Stops the drainer after the event in flight; pending events stay in Redis for the next one. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#unlisten?.();
      this.#pauses.stop();
      await this.#loop;
      await this.#draining?.catch(() => undefined);
    })();
    return this.#closing;
  }
}
