import type { Bus } from '../../bus/bus.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { BlacklistKeys } from '../../datasets/blacklist.ts';
import { BLACKLIST_KEYS, BLACKLIST_MAX_EXPIRE_AT_S, BLACKLIST_TOPIC } from '../../datasets/blacklist.ts';
import { describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { countOption, msOption, objectOption } from '../../options.ts';
import { OutboxDrainer } from '../../outbox/drainer.ts';
import type { RedisOutboxEntry } from '../../outbox/redis-store.ts';
import { RedisOutboxStore } from '../../outbox/redis-store.ts';
import type { OutboxEntry } from '../../outbox/store.ts';
import { DIGEST_BUCKET_S } from '../../replica/digest.ts';
import type { RedisClient } from '../../redis/client.ts';
import { parseRevocationEntry } from '../../sources/blacklist-source.ts';
import { newEpoch } from '../../sources/memory-source.ts';
import { runRevokeScript } from '../../sources/redis-scripts.ts';
import { backoffDelay } from '../../util/backoff.ts';

/** Recent revocations kept for replicas that lost an event (a read, instead of a full load). */
const LOG_SIZE = 10_000;

/** Pending events read per drain pass. */
const DRAIN_BATCH = 500;

/** The event a pending entry `version:exat:jti` stands for. */
function revocationEvent(
  version: number,
  expireAt: number,
  jti: string,
  epoch: string | undefined,
): OutboxEntry {
  return {
    topic: BLACKLIST_TOPIC,
    payload: { type: 'blacklist_added', jti, expire_at: expireAt },
    version,
    epoch,
  };
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

export interface NormalizedRevocationsOptions {
  redis: RedisClient;
  bus: Bus;
  logger: Logger;
  clock: Clock;
  eventSecret: string | undefined;
  publishWaitMs: number;
  keys: BlacklistKeys;
  holdAfterExpiryS: number;
}

/** Merges the defaults and checks ranges (OptionTypeError / OptionRangeError at construction). */
export function normalizeRevocationsOptions(options: RevocationsOptions): NormalizedRevocationsOptions {
  objectOption('redis', options.redis);
  objectOption('bus', options.bus);
  return {
    redis: options.redis,
    bus: options.bus,
    logger: options.logger ?? silentLogger,
    clock: options.clock ?? systemClock,
    eventSecret: options.eventSecret,
    publishWaitMs: msOption('publishWaitMs', options.publishWaitMs, 2000),
    keys: options.keys ?? BLACKLIST_KEYS,
    holdAfterExpiryS: countOption('holdAfterExpiryS', options.holdAfterExpiryS, 31, 0),
  };
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
 * after the broker's ack. The outbox drainer retries what is left (broker
 * down, or an auth process killed between commit and publish: any auth
 * instance drains it).
 */
export class Revocations {
  readonly #o: NormalizedRevocationsOptions;
  readonly #store: RedisOutboxStore;
  readonly #drainer: OutboxDrainer<RedisOutboxEntry>;

  constructor(options: RevocationsOptions) {
    this.#o = normalizeRevocationsOptions(options);
    const { logger } = this.#o;
    this.#store = new RedisOutboxStore({
      redis: this.#o.redis,
      listKey: this.#o.keys.pendingKey,
      epochKey: this.#o.keys.epochKey,
      parse: (raw, epoch) => {
        const r = parseRevocationEntry(raw);
        return r && revocationEvent(r.version, r.expireAt, r.jti, epoch);
      },
      onMalformed: () => logger.warn({}, 'dropping a malformed pending revocation event'),
    });
    this.#drainer = new OutboxDrainer({
      store: this.#store,
      bus: this.#o.bus,
      clock: this.#o.clock,
      eventSecret: this.#o.eventSecret,
      confirm: 'each',
      batchSize: DRAIN_BATCH,
      // Idle: look again now and then (another auth instance may have died with events pending).
      idleMs: 5000,
      retryDelayMs: (failures) => backoffDelay(Math.min(failures, 6), 200, 5000),
      waitForBus: true,
      onPassFailed: (err) => logger.warn({ err: describeError(err) }, 'revocation drain failed'),
      onPublishFailed: (err, entry) =>
        logger.warn(
          { err: describeError(err), version: entry.version },
          'revocation event not published yet',
        ),
    });
  }

  /** Starts the drainer: events left by a previous process, or by an outage, go out. */
  start(): void {
    this.#drainer.start();
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
    const now = Math.floor(this.#o.clock.now() / 1000);
    // Capped where replicas can store it exactly (the digest hashes the same number on both sides).
    const expireAt = Math.min(
      BLACKLIST_MAX_EXPIRE_AT_S,
      Math.max(now + 1, Math.ceil(exp) + this.#o.holdAfterExpiryS),
    );
    const committed = await runRevokeScript(this.#o.redis, this.#o.keys, {
      jti,
      expireAt,
      newEpoch: newEpoch(),
      logSize: LOG_SIZE,
      bucketS: DIGEST_BUCKET_S,
    });
    if (!committed) return { added: false, version: undefined, published: false };
    const { version, epoch } = committed;
    const entry: RedisOutboxEntry = {
      ...revocationEvent(version, expireAt, jti, epoch),
      raw: `${version}:${expireAt}:${jti}`,
    };
    return { added: true, version, published: await this.#drainer.publishNow(entry, this.#o.publishWaitMs) };
  }

  get stats() {
    const { published, publish_failures } = this.#drainer.stats;
    return { published, publish_failures };
  }

  /** Pending events in Redis (for /revocations and tests). */
  pendingCount(): Promise<number> {
    return this.#store.pending();
  }

  /** Asks the drainer for a pass now (another instance's revocation waits unpublished). */
  drainSoon(): void {
    this.#drainer.kick();
  }

  /** One pass over the pending list, oldest first. Returns how many are left. */
  async drainOnce(): Promise<number> {
    await this.#drainer.drainOnce();
    return this.#store.pending();
  }

  /** Stops the drainer after the event in flight; pending events stay in Redis for the next one. */
  close(): Promise<void> {
    return this.#drainer.close();
  }
}
