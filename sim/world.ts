import type { BusMessage } from '../src/bus/bus.ts';
import { blacklistDataset, toBlacklistValue } from '../src/datasets/blacklist.ts';
import type { Character } from '../src/datasets/catalog.ts';
import { catalogDataset } from '../src/datasets/catalog.ts';
import { encodeEvent } from '../src/events/codec.ts';
import { heartbeatPayload, RELOAD_TYPE } from '../src/events/control.ts';
import type { Change } from '../src/events/event.ts';
import type { Dataset } from '../src/replica/dataset.ts';
import { comparableFrom, DIGEST_BUCKET_S } from '../src/replica/digest.ts';
import type { ProtocolMutant } from '../src/replica/options.ts';
import { ReplicatedCache } from '../src/replica/replicated-cache.ts';
import type { Logger } from '../src/logger.ts';
import { silentLogger } from '../src/logger.ts';
import { Oracle } from './oracle.ts';
import { Rng } from './rng.ts';
import type { Fault, FaultKind, Forgery, Schedule } from './schedule.ts';
import { Scheduler } from './scheduler.ts';
import type { SimQueue } from './sim-bus.ts';
import { SimBroker, SimBus } from './sim-bus.ts';
import { SimSource } from './sim-source.ts';

/** The bound every `ready` replica must keep (the replica's default maxStalenessMs). */
export const BOUND_MS = 1000;
/** Samples of every replica's state and content, this often. */
const SAMPLE_MS = 50;
/** After the faults stop, replicas have this long to be ready. */
const SETTLE_READY_MS = 2500;
/**
 * Once settled, a replica may leave `ready` only briefly (a reload marker, a
 * foreign writer's race repaired): never for longer than this.
 */
const MAX_NOT_READY_MS = 1000;
const HEARTBEAT_MS = 250;
const START = Date.UTC(2026, 11, 4, 12, 0, 0);

export interface RunResult {
  violations: string[];
  maxStalenessMs: number;
  faults: Record<FaultKind, number>;
  steps: number;
}

type Value = number | Character;

interface PendingEvent {
  version: number;
  epoch: string;
  payload: Record<string, unknown>;
  committedAt: number;
}

/** One schedule, run on virtual time against the real ReplicatedCache. */
export class World {
  readonly #s: Schedule;
  readonly #rng: Rng;
  readonly #mutant: ProtocolMutant | undefined;
  readonly #sched = new Scheduler(START);
  readonly #broker: SimBroker;
  readonly #dataset: Dataset<Value>;
  readonly #source: SimSource<Value>;
  readonly #oracle: Oracle<Value>;
  readonly #writers: SimBus[] = [];
  readonly #replicas: Array<ReplicatedCache<Value> | undefined> = [];
  readonly #replicaBuses: Array<SimBus | undefined> = [];
  /** Per replica: when it last applied a forged change (a forgery gets the bound to be repaired). */
  readonly #forgedAt: number[] = [];
  /** Per replica: since when it has not been ready. */
  readonly #notReadySince: Array<number | undefined> = [];
  readonly #pending = new Map<number, PendingEvent>();
  readonly #messageFaults: Fault[] = [];
  /** The fault a message took: every queue of that message sees it. */
  readonly #faultOf = new WeakMap<BusMessage, Fault>();
  readonly #violations: string[] = [];
  readonly #counts = {} as Record<FaultKind, number>;
  #maxStaleness = 0;
  #jti = 0;
  #writing = true;

  constructor(schedule: Schedule, seed: number, mutant: ProtocolMutant | undefined) {
    this.#s = schedule;
    this.#rng = new Rng(seed);
    this.#mutant = mutant;
    this.#dataset = (schedule.dataset === 'blacklist' ? blacklistDataset : catalogDataset) as Dataset<Value>;
    this.#broker = new SimBroker(this.#sched, (m, q) => this.#route(m, q));
    this.#source = new SimSource(this.#sched, this.#rng, this.#dataset, schedule.dataset === 'catalog');
    this.#oracle = new Oracle(this.#dataset, this.#source.mem);
  }

  async run(): Promise<RunResult> {
    const s = this.#s;
    const t = (ms: number): number => START + ms;
    for (let w = 0; w < s.writers; w++) this.#writers.push(new SimBus(this.#broker, `writer-${w}`));
    // The source starts with a little data, as a running system would.
    for (let i = 0; i < 5; i++) this.#commit(this.#randomChange());
    this.#pending.clear();
    for (let r = 0; r < s.replicas; r++) this.#startReplica(r);
    for (let w = 0; w < s.writers; w++) {
      this.#every(
        w * 7 + this.#rng.int(0, s.writeEveryMs),
        () => s.writeEveryMs * (0.5 + this.#rng.next()),
        () => this.#write(w),
      );
      this.#every(
        this.#rng.int(0, HEARTBEAT_MS),
        () => HEARTBEAT_MS,
        () => this.#heartbeat(w),
      );
      this.#every(
        this.#rng.int(0, 300),
        () => 300,
        () => this.#drain(w),
      );
    }
    // The seed's Python job writes now and then (an import), not at the versioned writers' rate.
    if (s.dataset === 'catalog') {
      this.#every(
        300,
        () => this.#rng.int(1500, 4000),
        () => this.#foreignWrite(),
      );
    }
    for (const fault of s.faults) {
      this.#counts[fault.kind] = (this.#counts[fault.kind] ?? 0) + 1;
      this.#sched.at(t(fault.at), () => this.#inject(fault));
    }
    this.#sched.at(t(s.settleEndMs), () => {
      this.#writing = false;
    });
    for (let at = s.warmupMs; at <= s.endMs; at += SAMPLE_MS) this.#sched.at(t(at), () => this.#sample(at));
    await this.#sched.run(t(s.endMs));
    this.#finalCheck();
    for (const replica of this.#replicas) await replica?.close();
    return {
      violations: this.#violations,
      maxStalenessMs: this.#maxStaleness,
      faults: this.#counts,
      steps: this.#sched.steps,
    };
  }

  /** Repeats `fn` at intervals, from `firstMs` after the start, while the run lasts. */
  #every(firstMs: number, interval: () => number, fn: () => void): void {
    const tick = (): void => {
      fn();
      this.#sched.setTimeout(tick, interval());
    };
    this.#sched.setTimeout(tick, firstMs);
  }

  // ---------------------------------------------------------------- replicas

  #startReplica(r: number): void {
    const bus = new SimBus(this.#broker, `replica-${r}-${this.#sched.now()}`);
    const replica = new ReplicatedCache<Value>({
      dataset: this.#dataset,
      bus,
      source: this.#source,
      clock: this.#sched,
      mutant: this.#mutant,
      random: () => this.#rng.next(),
      logger: this.#logger(`replica ${r}`),
      onApplied: (event, epoch) => {
        if (event.origin === 'forger') this.#forgedAt[r] = this.#sched.now();
        // Events carry their true epoch in `origin` (writer:epoch:version): a mutant may strip the field.
        const trueEpoch = event.origin?.startsWith('w') ? event.origin.split(':')[1] : undefined;
        if (trueEpoch !== undefined && trueEpoch !== epoch) {
          this.#violation(`replica ${r} applied v${event.version} of epoch ${trueEpoch} to epoch ${epoch}`);
        }
      },
    });
    this.#replicas[r] = replica;
    this.#replicaBuses[r] = bus;
    replica.start().catch(() => undefined);
  }

  /** With SIM_TRACE=1, every replica's log lines on virtual time (for replaying one schedule). */
  #logger(name: string): Logger {
    if (!process.env.SIM_TRACE) return silentLogger;
    const line =
      (level: string) =>
      (obj: object, msg?: string): void =>
        console.error(`${this.#sched.now() - START} ms ${name} ${level} ${msg ?? ''} ${JSON.stringify(obj)}`);
    const logger: Logger = {
      debug: line('debug'),
      info: line('info'),
      warn: line('warn'),
      error: line('error'),
      child: () => logger,
    };
    return logger;
  }

  #restartReplica(r: number, downMs: number): void {
    const replica = this.#replicas[r];
    this.#replicas[r] = undefined;
    this.#replicaBuses[r] = undefined;
    void replica?.close();
    this.#sched.setTimeout(() => this.#startReplica(r), downMs);
  }

  // ---------------------------------------------------------------- writers

  #randomChange(): Change<Value> {
    const now = this.#sched.now();
    if (this.#s.dataset === 'blacklist') {
      const expireAtS = Math.floor(now / 1000) + this.#rng.int(3, 40);
      return { kind: 'set', key: `jti-${this.#jti++}`, value: toBlacklistValue(expireAtS) };
    }
    const roll = this.#rng.next();
    const code = `c${this.#rng.int(0, 14)}`;
    if (roll < 0.03) {
      const entries: Array<[string, Value]> = [];
      for (let i = 0; i < this.#rng.int(3, 10); i++) {
        const c = this.#character(`c${this.#rng.int(0, 14)}`);
        entries.push([c.id, c]);
      }
      return { kind: 'replace', entries };
    }
    if (roll < 0.2) return { kind: 'delete', key: `id-${code}` };
    const c = this.#character(code);
    return { kind: 'set', key: c.id, value: c };
  }

  #character(code: string): Character {
    return {
      id: `id-${code}`,
      code,
      name: `n${this.#rng.int(0, 999)}`,
      match_label: `l${this.#rng.int(0, 3)}`,
      type_label: this.#rng.chance(0.2) ? null : 't',
      dialog: null,
      is_default: false,
    };
  }

  /** Applies a versioned change to the source, records it for the oracle; its event is pending until published. */
  #commit(change: Change<Value>): PendingEvent {
    this.#oracle.record(this.#sched.now(), change);
    const version = this.#source.mem.write(change);
    // A big import goes out as a reload marker (the full refresh is too large to send).
    const reload = change.kind === 'replace' && this.#rng.chance(0.3);
    const payload = reload
      ? { type: RELOAD_TYPE, dataset: this.#dataset.name }
      : this.#dataset.encode!(change);
    const pending = { version, epoch: this.#source.mem.epoch, payload, committedAt: this.#sched.now() };
    this.#pending.set(version, pending);
    return pending;
  }

  #write(w: number): void {
    if (!this.#writing || this.#source.down) return;
    const pending = this.#commit(this.#randomChange());
    // Commit, then publish a moment later (the writer may die or lose its link in between).
    this.#sched.setTimeout(() => void this.#publishPending(w, pending), this.#rng.int(0, 15));
  }

  async #publishPending(w: number, p: PendingEvent): Promise<void> {
    const { body, headers } = encodeEvent(p.payload, {
      version: p.version,
      epoch: p.epoch,
      published_at: this.#sched.now(),
      origin: `w${w}:${p.epoch}:${p.version}`,
    });
    try {
      await this.#writers[w]!.publish(this.#dataset.topic, body, { headers });
      if (this.#pending.get(p.version) === p) this.#pending.delete(p.version);
    } catch {
      // Stays pending: any writer's drainer publishes it.
    }
  }

  /** Any writer publishes what others committed but could not publish (the outbox relay, auth's drainer). */
  #drain(w: number): void {
    const now = this.#sched.now();
    for (const p of [...this.#pending.values()].sort((a, b) => a.version - b.version)) {
      if (now - p.committedAt >= 100) void this.#publishPending(w, p);
    }
  }

  #heartbeat(w: number): void {
    if (this.#source.down || this.#writers[w]!.state !== 'up') return;
    const now = this.#sched.now();
    const expiring = this.#s.dataset === 'blacklist';
    const fromBucket = expiring ? comparableFrom(now) : -Infinity;
    const mem = this.#source.mem;
    const state = { epoch: mem.epoch, version: mem.currentVersion, digest: undefined as string | undefined };
    void mem.state(fromBucket).then(async (s) => {
      state.digest = s.digest;
      const payload = heartbeatPayload({
        dataset: this.#dataset.name,
        epoch: state.epoch,
        version: state.version,
        digest: state.digest,
        digestFrom: expiring ? fromBucket * DIGEST_BUCKET_S : undefined,
        readAt: now,
      });
      const { body, headers } = encodeEvent(payload, {
        version: state.version,
        epoch: state.epoch,
        published_at: now,
        origin: `hb${w}`,
      });
      await this.#writers[w]!.publish(this.#dataset.topic, body, { headers }).catch(() => undefined);
    });
  }

  /** The seed's Python job: writes the table itself, then publishes without a version. */
  #foreignWrite(): void {
    if (!this.#writing || this.#source.down) return;
    const change = this.#randomChange();
    if (change.kind === 'replace') return;
    this.#oracle.record(this.#sched.now(), change);
    this.#source.mem.writeUnversioned(change);
    const { body, headers } = encodeEvent(this.#dataset.encode!(change), {});
    this.#sched.setTimeout(
      () => void this.#writers[0]!.publish(this.#dataset.topic, body, { headers }).catch(() => undefined),
      this.#rng.int(2, 30),
    );
  }

  // ---------------------------------------------------------------- faults

  #inject(fault: Fault): void {
    switch (fault.kind) {
      case 'drop':
      case 'duplicate':
      case 'reorder':
      case 'delay':
        this.#messageFaults.push(fault);
        break;
      case 'partition': {
        const bus =
          fault.writer !== undefined ? this.#writers[fault.writer] : this.#replicaBuses[fault.replica!];
        if (!bus) break;
        bus.losesQueue = fault.losesQueue;
        bus.setUp(false);
        this.#sched.setTimeout(() => bus.setUp(true), fault.ms);
        break;
      }
      case 'source_restart':
        this.#oracle.recordReset(this.#sched.now());
        this.#source.mem.reset();
        this.#pending.clear();
        break;
      case 'forged':
        this.#forge(fault.forgery);
        break;
      case 'replica_restart':
        this.#restartReplica(fault.replica, fault.downMs);
        break;
      case 'snapshot_failure':
        this.#source.down = true;
        this.#sched.setTimeout(() => {
          this.#source.down = false;
        }, fault.ms);
        break;
    }
  }

  #forge(forgery: Forgery): void {
    const mem = this.#source.mem;
    const change = this.#randomChange();
    const payload =
      forgery === 'empty-refresh'
        ? { type: 'full_refresh', characters: [] }
        : this.#dataset.encode!(change.kind === 'replace' ? { kind: 'delete', key: 'id-c0' } : change);
    const envelope =
      forgery === 'next-version' || forgery === 'far-version'
        ? {
            version: mem.currentVersion + (forgery === 'far-version' ? this.#rng.int(5, 60) : 1),
            epoch: mem.epoch,
          }
        : forgery === 'new-epoch'
          ? { version: 1, epoch: `forged${this.#rng.int(0, 1e6)}` }
          : {};
    const { body, headers } = encodeEvent(payload, { ...envelope, origin: 'forger' });
    this.#broker.publish({ topic: this.#dataset.topic, body, headers, contentType: 'application/json' });
  }

  /** Delivery times of one message to one queue: a few ms, unless a pending fault takes it. */
  #route(message: BusMessage, queue: SimQueue): number[] {
    const base = this.#rng.int(1, 25);
    let fault = this.#faultOf.get(message);
    if (!fault) {
      // Faults take data events, except heartbeat drops, which take heartbeats.
      const heartbeat = message.body.includes('"cachecast.heartbeat"');
      const index = this.#messageFaults.findIndex(
        (f) =>
          (f.kind === 'drop' && f.heartbeat) === heartbeat &&
          (f.kind !== 'drop' || f.replica === 'all' || this.#replicaBuses[f.replica] === queue.bus),
      );
      if (index < 0) return [base];
      fault = this.#messageFaults.splice(index, 1)[0]!;
      this.#faultOf.set(message, fault);
    }
    switch (fault.kind) {
      case 'drop':
        return fault.replica === 'all' || this.#replicaBuses[fault.replica] === queue.bus ? [] : [base];
      case 'duplicate':
        return [base, base + fault.lateMs];
      case 'reorder':
      case 'delay':
        return [base + fault.lateMs];
      default:
        return [base];
    }
  }

  // ---------------------------------------------------------------- invariants

  #violation(text: string): void {
    if (this.#violations.length < 20) this.#violations.push(`${this.#sched.now() - START} ms: ${text}`);
  }

  #sample(at: number): void {
    const now = this.#sched.now();
    const settled = at >= this.#s.faultEndMs + SETTLE_READY_MS;
    for (let r = 0; r < this.#replicas.length; r++) {
      const replica = this.#replicas[r];
      if (!replica) continue;
      const stats = replica.stats();
      if (stats.events_held > 100_000) this.#violation(`replica ${r} holds ${stats.events_held} events`);
      if (replica.state !== 'ready') {
        const since = now - (this.#notReadySince[r] ??= now);
        if (settled && since > MAX_NOT_READY_MS) {
          this.#violation(
            `replica ${r} has been ${replica.state} for ${since} ms, ${at - this.#s.faultEndMs} ms after the faults stopped (${this.#describe(replica)})`,
          );
        }
        continue;
      }
      this.#notReadySince[r] = undefined;
      const forged = now - (this.#forgedAt[r] ?? -Infinity) <= BOUND_MS;
      const staleness = this.#staleness(replica, now, BOUND_MS);
      if (typeof staleness === 'string') {
        if (!forged) this.#violation(`replica ${r} is ready but ${staleness}`);
        continue;
      }
      this.#maxStaleness = Math.max(this.#maxStaleness, staleness);
      if (staleness > BOUND_MS)
        this.#violation(`replica ${r} is ready ${Math.round(staleness)} ms behind its source`);
    }
  }

  /** How far behind the source a replica is (ms), or what is wrong with it. */
  #staleness(replica: ReplicatedCache<Value>, now: number, windowMs: number): number | string {
    return this.#oracle.staleness(now, replica.entries(), windowMs);
  }

  #describe(replica: ReplicatedCache<Value>): string {
    const s = replica.stats();
    const mem = this.#source.mem;
    return [
      `v${s.version}/${mem.currentVersion}`,
      `epoch ${s.epoch === mem.epoch ? 'same' : 'other'}`,
      `held ${s.events_held}`,
      `staleness ${s.staleness_ms}`,
      `resyncs ${s.resyncs} (${s.last_resync_reason})`,
      `catch-ups ${s.catch_ups}`,
      `checks ${s.source_checks}`,
      `divergences ${s.divergences}`,
      `bus ${s.bus_connected ? 'up' : 'down'}`,
      `repairing ${s.repairing}`,
      `source failing ${s.source_failing}`,
    ].join(', ');
  }

  #finalCheck(): void {
    const now = this.#sched.now();
    for (let r = 0; r < this.#replicas.length; r++) {
      const replica = this.#replicas[r];
      if (!replica) continue;
      if (replica.state !== 'ready') {
        this.#violation(`replica ${r} ends ${replica.state}`);
        continue;
      }
      if (this.#staleness(replica, now, 0) !== 0) {
        this.#violation(
          `replica ${r} ends unequal to the source (version ${replica.version} of ${this.#source.mem.currentVersion})`,
        );
      }
    }
  }
}
