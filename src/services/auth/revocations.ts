import type { Bus } from '../../bus/bus.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import { BLACKLIST_KEY_PREFIX, BLACKLIST_TOPIC } from '../../datasets/blacklist.ts';
import { describeError } from '../../errors.ts';
import { encodeEvent } from '../../events/codec.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { BLACKLIST_VERSION_KEY } from '../../sources/blacklist-source.ts';
import type { RedisClient } from '../../sources/redis-source.ts';
import { backoffDelay } from '../../util/backoff.ts';
import { Pauses } from '../../util/pauses.ts';

/** Far enough for any real token; keeps EXAT an integer Redis accepts. */
const MAX_EXPIRE_AT = 2 ** 40;

/** Revocations committed in Redis whose event is not yet confirmed by the broker. */
export const BLACKLIST_OUTBOX_KEY = 'cachecast:outbox:blacklist';

/**
 * One atomic step: the revocation, the version bump and the pending event.
 * A script rather than MULTI because a repeated logout must not bump the
 * version (SET NX decides), and the event must be recorded with the version
 * INCR returned, which MULTI cannot feed forward.
 */
const REVOKE_SCRIPT = `
if redis.call('SET', KEYS[1], '1', 'EXAT', ARGV[1], 'NX') then
  local v = redis.call('INCR', KEYS[2])
  redis.call('RPUSH', KEYS[3], v .. ':' .. ARGV[1] .. ':' .. ARGV[2])
  return v
end
return 0`;

interface Pending {
  entry: string;
  version: number;
  expireAt: number;
  jti: string;
}

function parseEntry(entry: string): Pending | undefined {
  const first = entry.indexOf(':');
  const second = entry.indexOf(':', first + 1);
  if (first < 0 || second < 0) return undefined;
  const version = Number(entry.slice(0, first));
  const expireAt = Number(entry.slice(first + 1, second));
  const jti = entry.slice(second + 1);
  if (!Number.isSafeInteger(version) || !Number.isSafeInteger(expireAt) || !jti) return undefined;
  return { entry, version, expireAt, jti };
}

export interface RevocationsOptions {
  redis: RedisClient;
  bus: Bus;
  logger?: Logger;
  clock?: Clock;
  eventSecret?: string | undefined;
  /** How long a logout waits for the broker's confirm before leaving the event to the drainer. @default 2000 */
  publishWaitMs?: number;
  /** @default 'blacklist:' */
  prefix?: string;
  /** @default BLACKLIST_OUTBOX_KEY */
  outboxKey?: string;
  /** @default BLACKLIST_VERSION_KEY */
  versionKey?: string;
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
  readonly #prefix: string;
  readonly #outboxKey: string;
  readonly #versionKey: string;
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
    this.#prefix = options.prefix ?? BLACKLIST_KEY_PREFIX;
    this.#outboxKey = options.outboxKey ?? BLACKLIST_OUTBOX_KEY;
    this.#versionKey = options.versionKey ?? BLACKLIST_VERSION_KEY;
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
    const expireAt = Math.max(now + 1, Math.min(Math.ceil(exp), MAX_EXPIRE_AT) + this.#holdAfterExpiryS);
    const keys = [this.#prefix + jti, this.#versionKey, this.#outboxKey];
    const result = await this.#redis.eval(REVOKE_SCRIPT, { keys, arguments: [String(expireAt), jti] });
    const version = Number(result);
    if (version === 0) return { added: false, version: undefined, published: false };
    const pending: Pending = { entry: `${version}:${expireAt}:${jti}`, version, expireAt, jti };
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
    const envelope = { version: pending.version, published_at: this.#clock.now() };
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

  #kick(): void {
    this.#drainAgain = true;
    this.#pauses.wake();
  }

  /** One pass over the pending list, oldest first. Returns how many are left. */
  async drainOnce(): Promise<number> {
    this.#draining ??= (async () => {
      try {
        const entries = await this.#redis.lRange(this.#outboxKey, 0, 499);
        for (const entry of entries) {
          if (this.#closed) break;
          const pending = parseEntry(entry);
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
