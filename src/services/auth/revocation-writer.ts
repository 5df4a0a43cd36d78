import type { Bus } from '../../bus/bus.ts';
import type { Clock } from '../../clock.ts';
import { systemClock } from '../../clock.ts';
import type { BlacklistKeys } from '../../datasets/blacklist.ts';
import { BLACKLIST_KEYS, BLACKLIST_MAX_EXPIRE_AT_S, BLACKLIST_TOPIC } from '../../datasets/blacklist.ts';
import { CachecastError, describeError } from '../../errors.ts';
import type { Logger } from '../../logger.ts';
import { silentLogger } from '../../logger.ts';
import { countOption, msOption, objectOption } from '../../options.ts';
import { OutboxDrainer } from '../../outbox/drainer.ts';
import type { RedisOutboxEntry } from '../../outbox/redis-store.ts';
import { RedisOutboxStore } from '../../outbox/redis-store.ts';
import type { OutboxEntry } from '../../outbox/store.ts';
import { DIGEST_BUCKET_S } from '../../replica/digest.ts';
import type { RedisClient } from '../../redis/client.ts';
import { ReplicaAcks } from '../../redis/replica-acks.ts';
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
  /**
   * Replicas that must hold a revocation before revoke() resolves (Redis WAIT):
   * with Sentinel, a revocation only the master had is lost when the master
   * dies. 0: answer once the master committed. @default 0
   */
  minReplicasAck?: number;
  /** How long revoke() waits for those replicas before it fails. @default 1000 */
  replicasAckTimeoutMs?: number;
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
  minReplicasAck: number;
  replicasAckTimeoutMs: number;
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
    minReplicasAck: countOption('minReplicasAck', options.minReplicasAck, 0, 0, 64),
    replicasAckTimeoutMs: msOption('replicasAckTimeoutMs', options.replicasAckTimeoutMs, 1000, 1),
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
  readonly #acks: ReplicaAcks | undefined;

  constructor(options: RevocationsOptions) {
    this.#o = normalizeRevocationsOptions(options);
    this.#acks =
      this.#o.minReplicasAck > 0
        ? new ReplicaAcks(this.#o.redis, this.#o.minReplicasAck, this.#o.replicasAckTimeoutMs)
        : undefined;
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
   * fractional). Resolves once Redis has committed (and, with minReplicasAck,
   * once that many replicas have it); throws when Redis did not commit (then
   * nothing changed) or the replicas did not confirm in time (then the master
   * has it, its event goes out, and a retry can confirm it). A repeated logout
   * changes nothing and publishes nothing: if the first one's event is still
   * pending, a drainer sends it.
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
    // A repeated logout waits too: the first may have been answered 503, and its write
    // (made on another connection, maybe) is covered because the script wrote again.
    if (this.#acks) await this.#confirmReplicated();
    if (!committed) return { added: false, version: undefined, published: false };
    const { version, epoch } = committed;
    const entry: RedisOutboxEntry = {
      ...revocationEvent(version, expireAt, jti, epoch),
      raw: `${version}:${expireAt}:${jti}`,
    };
    return { added: true, version, published: await this.#drainer.publishNow(entry, this.#o.publishWaitMs) };
  }

  async #confirmReplicated(): Promise<void> {
    const acked = await this.#acks!.acked();
    if (acked < this.#o.minReplicasAck) {
      throw new CachecastError(
        'REVOCATION_NOT_REPLICATED',
        `${acked} of the ${this.#o.minReplicasAck} Redis replicas required acknowledged the revocation within ${this.#o.replicasAckTimeoutMs} ms`,
      );
    }
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
