import { CachecastError } from '../errors.ts';
import type { DigestAlgorithm } from '../replica/digest.ts';
import type {
  SnapshotResult,
  SnapshotSource,
  SourceChange,
  SourceChanges,
  SourceState,
} from '../replica/source.ts';
import type { RedisClient } from '../redis/client.ts';
import { CHANGES_SCRIPT, EXPIRIES_SCRIPT, SNAPSHOT_END_SCRIPT, STATE_SCRIPT } from './redis-scripts.ts';

/**
 * Where a Redis dataset keeps what the sync protocol needs beside its
 * entries; its writer's script (e.g. REVOKE_SCRIPT) keeps them atomically
 * with every write.
 */
export interface RedisProtocolKeys {
  /** The epoch id (a string; created by the writer when missing). */
  epochKey: string;
  /** Hash: digest bucket -> 16 hex digits. */
  digestKey: string;
  /** List of recent changes, `version:...`, oldest first (capped). */
  logKey: string;
  /** List of committed events not yet published (reported as `pending`). */
  pendingKey?: string;
  /** Turns a log entry into its change; undefined when it is malformed. */
  parseLogEntry(entry: string): SourceChange | undefined;
}

export interface RedisKeySourceOptions<V> {
  client: RedisClient;
  /** Every key under this prefix is an entry; the rest of the key is its key. */
  prefix: string;
  /** A string integer bumped (INCR) in the same atomic step as every write. */
  versionKey: string;
  /** Epoch, digest and change log: without them the source offers versions only. */
  protocol?: RedisProtocolKeys;
  /** Keys asked for per SCAN step. @default 1000 */
  scanCount?: number;
  /** SCAN steps whose expiry pipelines may be in flight at once. @default 8 */
  parallelBatches?: number;
  /** Changes `changesSince` returns at most (beyond: a full load is cheaper). @default 1000 */
  maxChanges?: number;
  /** Builds the stored value from the entry's absolute expiry (epoch ms; undefined: no TTL). */
  toValue(expireAtMs: number | undefined): V | undefined;
  now?: () => number;
}

/** EXPIRETIME missing (Redis < 7), as a command or called from a script. */
const UNKNOWN_COMMAND = /unknown (redis )?command/i;
/** The server or this user's ACL runs no scripts. */
const SCRIPTS_REFUSED = /unknown command .?eval|NOPERM|scripts? (are )?disabled/i;

/** The lowest bucket, for "every bucket" in a script (Lua's tonumber has no -inf). */
const ALL_BUCKETS = '-1e300';

function bucketArg(fromBucket: number): string {
  return Number.isFinite(fromBucket) ? String(fromBucket) : ALL_BUCKETS;
}

/**
 * A dataset kept as one Redis key per entry (seed 001's `blacklist:{jti}` with
 * a TTL). Loads with SCAN (never KEYS, which blocks Redis) and reads each
 * step's expiries in one script call, sent after the next SCAN step so the
 * two overlap.
 *
 * Redis cannot read many keys and a version atomically without blocking it, so
 * the version is read first: events newer than it are replayed over the
 * snapshot, which is harmless for idempotent entries. The digest is read
 * after the data, with its version: the replica adopts it once it has
 * replayed the events up to that version.
 */
export class RedisKeySource<V> implements SnapshotSource<V> {
  readonly #o: Required<Omit<RedisKeySourceOptions<V>, 'now' | 'protocol'>> & {
    now: () => number;
    protocol: RedisProtocolKeys | undefined;
  };
  readonly digestAlgorithm: DigestAlgorithm | undefined;
  #expireTime: boolean | undefined;
  /** Whether the server runs EXPIRIES_SCRIPT (undefined: not tried yet). */
  #script: boolean | undefined;

  constructor(options: RedisKeySourceOptions<V>) {
    this.#o = {
      scanCount: 1000,
      parallelBatches: 8,
      maxChanges: 1000,
      now: Date.now,
      ...options,
      protocol: options.protocol,
    };
    this.digestAlgorithm = options.protocol ? 'sha1' : undefined;
  }

  async load(put: (key: string, value: V) => void): Promise<SnapshotResult> {
    const before = await this.state(0);
    const { client, prefix, scanCount, parallelBatches } = this.#o;
    const scanOptions = { MATCH: `${escapeGlob(prefix)}*`, COUNT: scanCount };
    // Settled promises only: a batch or step that fails is reported after the
    // loop, never as an unhandled rejection while another one is awaited.
    let failure: { err: unknown } | undefined;
    const fail = (err: unknown): void => {
      failure ??= { err };
    };
    const inFlight: Array<Promise<void>> = [];
    let step = client.scan('0', scanOptions);
    for (;;) {
      const reply = await step.catch((err: unknown) => fail(err));
      if (!reply || failure) break;
      // The cursor chain is the critical path: the next step goes out before this
      // step's expiries, so Redis reads them while this process parses its keys.
      if (reply.cursor !== '0') {
        step = client.scan(reply.cursor, scanOptions);
        step.catch(() => undefined); // awaited (and reported) at the next turn
      }
      if (reply.keys.length > 0) {
        inFlight.push(this.#readExpiries(reply.keys, put).catch(fail));
        if (inFlight.length >= parallelBatches) await inFlight.shift();
      }
      if (reply.cursor === '0') break;
    }
    await Promise.all(inFlight);
    if (failure) throw failure.err;
    if (!this.#o.protocol) return { version: before.version };
    const after = await this.#loadEnd(before.version);
    if (after.epoch !== before.epoch) {
      throw new CachecastError('SOURCE_FAILED', 'the source changed epoch during the load');
    }
    return {
      version: before.version,
      epoch: before.epoch,
      digest: { atVersion: after.version, buckets: after.buckets },
      changes: after.changes,
    };
  }

  /** After the data: the digest, and the source's own changes made while the data was read. */
  async #loadEnd(since: number): Promise<{
    epoch: string;
    version: number;
    buckets: Array<[number, string]>;
    changes: SourceChange[];
  }> {
    const { client, versionKey, protocol, maxChanges } = this.#o;
    const raw = (await client.eval(SNAPSHOT_END_SCRIPT, {
      keys: [protocol!.epochKey, versionKey, protocol!.digestKey, protocol!.logKey],
      arguments: [String(since), String(maxChanges)],
    })) as Array<string | number>;
    const n = Number(raw[2]);
    const version = parseVersion(raw[1]);
    if (n < 0) {
      throw new CachecastError('SOURCE_FAILED', `more than ${maxChanges} writes while the snapshot loaded`);
    }
    const changes: SourceChange[] = [];
    for (const entry of raw.slice(3, 3 + n)) {
      const change = protocol!.parseLogEntry(String(entry));
      if (!change || change.version !== since + changes.length + 1) {
        throw new CachecastError('SOURCE_FAILED', 'the change log does not follow the versions');
      }
      changes.push(change);
    }
    const buckets: Array<[number, string]> = [];
    for (let i = 3 + n; i + 1 < raw.length; i += 2) buckets.push([Number(raw[i]), String(raw[i + 1])]);
    return { epoch: String(raw[0]), version, buckets, changes };
  }

  async #readExpiries(keys: string[], put: (key: string, value: V) => void): Promise<void> {
    const { prefix, toValue } = this.#o;
    // EXPIRETIME (Redis 7) is the exact second a revocation was written with;
    // older servers only have PTTL, which lands a few ms off it.
    const command = this.#expireTime === false ? 'PTTL' : 'EXPIRETIME';
    let at: number[];
    try {
      at = await this.#expiries(keys, command);
      this.#expireTime ??= true;
    } catch (err) {
      if (command === 'PTTL' || this.#expireTime === true || !UNKNOWN_COMMAND.test(String(err))) throw err;
      this.#expireTime = false;
      return this.#readExpiries(keys, put);
    }
    const now = command === 'PTTL' ? this.#o.now() : 0;
    for (let i = 0; i < keys.length; i++) {
      const t = at[i]!;
      if (t === -2) continue; // expired between SCAN and the read
      const value = toValue(t === -1 ? undefined : command === 'PTTL' ? now + t : t * 1000);
      if (value !== undefined) put(keys[i]!.slice(prefix.length), value);
    }
  }

  /**
   * One integer per key: one script call (EXPIRIES_SCRIPT) where the server
   * runs scripts, else one pipelined command per key (a server or ACL that
   * refuses EVAL; the protocol's scripts need it anyway).
   */
  async #expiries(keys: string[], command: 'EXPIRETIME' | 'PTTL'): Promise<number[]> {
    const { client } = this.#o;
    if (this.#script !== false) {
      try {
        const at = (await client.eval(EXPIRIES_SCRIPT, { keys, arguments: [command] })) as number[];
        this.#script = true;
        return at;
      } catch (err) {
        if (this.#script === true || !SCRIPTS_REFUSED.test(String(err))) throw err;
        this.#script = false;
      }
    }
    // Commands issued in one tick go out as one pipeline.
    return Promise.all(keys.map((key) => (command === 'PTTL' ? client.pTTL(key) : client.expireTime(key))));
  }

  async version(): Promise<number> {
    return parseVersion(await this.#o.client.get(this.#o.versionKey));
  }

  async state(fromBucket: number): Promise<SourceState> {
    const { client, versionKey, protocol } = this.#o;
    if (!protocol) return { epoch: '', version: await this.version() };
    const raw = (await client.eval(STATE_SCRIPT, {
      keys: [protocol.epochKey, versionKey, protocol.digestKey, protocol.pendingKey ?? ''],
      arguments: [bucketArg(fromBucket)],
    })) as Array<string | number>;
    return {
      epoch: String(raw[0]),
      version: parseVersion(raw[1]),
      digest: String(raw[2]),
      pending: Number(raw[3]),
    };
  }

  async changesSince(epoch: string, version: number, fromBucket: number): Promise<SourceChanges | undefined> {
    const { client, versionKey, protocol, maxChanges } = this.#o;
    if (!protocol) return undefined;
    const raw = (await client.eval(CHANGES_SCRIPT, {
      keys: [protocol.epochKey, versionKey, protocol.logKey, protocol.digestKey, protocol.pendingKey ?? ''],
      arguments: [epoch, String(version), bucketArg(fromBucket), String(maxChanges)],
    })) as Array<string | number>;
    if (Number(raw[4]) !== 1) return undefined;
    const state: SourceState = {
      epoch: String(raw[0]),
      version: parseVersion(raw[1]),
      digest: String(raw[2]),
      pending: Number(raw[3]),
    };
    const changes: SourceChange[] = [];
    for (const entry of raw.slice(5)) {
      const change = protocol.parseLogEntry(String(entry));
      // The log must hold exactly the versions after `version`, in order.
      if (!change || change.version !== version + changes.length + 1) return undefined;
      changes.push(change);
    }
    if (version + changes.length !== state.version) return undefined;
    return { epoch: state.epoch, changes, state };
  }

  async get(key: string): Promise<V | undefined> {
    const ttl = await this.#o.client.pTTL(this.#o.prefix + key);
    if (ttl === -2) return undefined;
    return this.#o.toValue(ttl === -1 ? undefined : this.#o.now() + ttl);
  }
}

function parseVersion(raw: unknown): number {
  const version = raw === null || raw === undefined ? 0 : Number(raw);
  return Number.isSafeInteger(version) && version >= 0 ? version : 0;
}

/** SCAN MATCH is a glob: a prefix must match itself literally. */
export function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}
