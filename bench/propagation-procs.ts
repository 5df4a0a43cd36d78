// The cross-process rounds of the propagation bench: reader processes
// (bench/propagation-reader.ts) report over IPC the moment a read sees a
// change; the writers run here, in the coordinator.
//
// Round A (cachecast against BentoCache): per event, alternating which goes
// first, BentoCache's writer set()s one key (Redis L2 write + Redis bus
// publish) and cachecast's writer revokes a jti as the auth service does
// (Redis script + publish with confirm through the outbox drainer); each is
// timed from just before the write until the last reader reported.
//
// Round B (the cost curve): blocks of events for cachecast with persistent
// events, with transient events (RabbitMQBus eventDelivery), and over a
// RabbitMQ stream, the blocks cycling so load drifts hit all three; the
// broker's CPU (beam.smp utime + stime from /proc) is read around each block,
// net of its idle rate measured just before.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisBusDriver, redisDriver } from 'bentocache/drivers/redis';
import { RabbitMQBus } from '../src/amqp/rabbitmq-bus.ts';
import type { Bus } from '../src/bus/bus.ts';
import { BLACKLIST_TOPIC, blacklistKeys } from '../src/datasets/blacklist.ts';
import { silentLogger } from '../src/logger.ts';
import { connectRedis, scanKeys } from '../src/redis/client.ts';
import type { ManagedRedis } from '../src/redis/client.ts';
import { Revocations } from '../src/services/auth/revocation-writer.ts';
import type { FromReader, ReaderSystem, ToReader } from './propagation-reader.ts';
import { nowNs, sleepMs } from './lib.ts';
import { StreamBus } from './stream-bus.ts';

const TIMEOUT_MS = 10_000;
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

/** The broker's Erlang VM, if this machine runs it and /proc shows it. */
export function findBeamPid(): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(join('/proc', entry, 'comm'), 'utf8').trim() === 'beam.smp') return Number(entry);
    } catch {
      // a process that ended while we looked
    }
  }
  return undefined;
}

/** CPU time (user + system) the process has used, ms. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

interface Pending {
  sys: ReaderSystem;
  key: string;
  value: number | undefined;
  remaining: number;
  done: () => void;
}

/** The reader processes, started once and reused by every size. */
export class ReaderPool {
  readonly #procs: ChildProcess[] = [];
  #pending: Pending | undefined;
  readonly #waiting = new Map<string, { left: number; done: () => void; fail: (err: Error) => void }>();
  #failure: string | undefined;

  private constructor() {}

  static async spawn(n: number): Promise<ReaderPool> {
    const pool = new ReaderPool();
    const hello = new Promise<void>((resolve, reject) =>
      pool.#waiting.set('hello', { left: n, done: resolve, fail: reject }),
    );
    const script = join(import.meta.dirname, 'propagation-reader.ts');
    for (let i = 0; i < n; i++) {
      const child = fork(script, [], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
      child.on('message', (m: FromReader) => pool.#onMessage(m));
      pool.#procs.push(child);
    }
    await withTimeout(hello, 180_000, `${n} reader processes to start`);
    return pool;
  }

  get size(): number {
    return this.#procs.length;
  }

  #onMessage(m: FromReader): void {
    if (m.op === 'saw') {
      const p = this.#pending;
      if (!p || p.sys !== m.sys || p.key !== m.key || (p.value !== undefined && p.value !== m.value)) return;
      if (--p.remaining === 0) {
        this.#pending = undefined;
        p.done();
      }
      return;
    }
    if (m.op === 'failed') {
      this.#failure = m.error;
      console.error(`reader: ${m.error}`);
      for (const w of this.#waiting.values()) w.fail(new Error(m.error));
      this.#waiting.clear();
      return;
    }
    const id = m.op === 'hello' ? 'hello' : `${m.op}:${m.sys}`;
    const w = this.#waiting.get(id);
    if (w && --w.left === 0) {
      this.#waiting.delete(id);
      w.done();
    }
  }

  async #all(
    op: 'opened' | 'closed',
    sys: ReaderSystem,
    procs: number,
    send: (i: number) => ToReader,
  ): Promise<void> {
    const done = new Promise<void>((resolve, reject) =>
      this.#waiting.set(`${op}:${sys}`, { left: procs, done: resolve, fail: reject }),
    );
    for (let i = 0; i < procs; i++) this.#procs[i]!.send(send(i));
    await withTimeout(done, 120_000, `${procs} readers ${op} ${sys}`);
  }

  /** Opens `perProc` readers of `sys` in each of the first `procs` processes. */
  open(
    sys: ReaderSystem,
    procs: number,
    perProc: number,
    params: Omit<Extract<ToReader, { op: 'open' }>, 'op' | 'sys' | 'count'>,
  ): Promise<void> {
    return this.#all('opened', sys, procs, () => ({ op: 'open', sys, count: perProc, ...params }));
  }

  close(sys: ReaderSystem, procs: number): Promise<void> {
    return this.#all('closed', sys, procs, () => ({ op: 'close', sys }));
  }

  /** Runs `write` and resolves with ms from just before it until `readers` readers saw `key` (= `value`). */
  async time(
    sys: ReaderSystem,
    readers: number,
    key: string,
    value: number | undefined,
    write: () => Promise<unknown>,
    timeoutMs = TIMEOUT_MS,
  ): Promise<number> {
    const seen = new Promise<void>((done) => {
      this.#pending = { sys, key, value, remaining: readers, done };
    });
    const start = nowNs();
    const written = write();
    await withTimeout(seen, timeoutMs, `${sys} ${key} in ${readers} readers`);
    const ms = Number(nowNs() - start) / 1e6;
    await written;
    if (this.#failure) throw new Error(this.#failure);
    return ms;
  }

  async exit(): Promise<void> {
    await Promise.all(
      this.#procs.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || !c.connected) return resolve();
            c.once('exit', () => resolve());
            c.send({ op: 'exit' } satisfies ToReader);
          }),
      ),
    );
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(ok: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleepMs(5);
  }
}

/** A cachecast writer as the auth service has it: Revocations over a bus. */
export class CachecastWriter {
  readonly #revocations: Revocations;
  private constructor(
    readonly bus: Bus,
    revocations: Revocations,
  ) {
    this.#revocations = revocations;
  }

  static async open(bus: Bus, redis: ManagedRedis, base: string): Promise<CachecastWriter> {
    await until(() => bus.state === 'up', 'the writer bus');
    return new CachecastWriter(
      bus,
      new Revocations({
        redis: redis.client,
        bus,
        keys: blacklistKeys(base),
        // A loaded machine may confirm late; the bench waits rather than leave it to the drainer.
        publishWaitMs: 10_000,
      }),
    );
  }

  async revoke(jti: string): Promise<void> {
    const r = await this.#revocations.revoke(jti, Math.floor(Date.now() / 1000) + 3600);
    if (!r.published) throw new Error(`revocation ${jti} not confirmed in time`);
  }

  async close(): Promise<void> {
    await this.#revocations.close();
    await this.bus.close();
  }
}

export interface Systems {
  redis: ManagedRedis;
  bento: BentoCache<Record<string, ReturnType<typeof bentostore>>>;
  persistent: CachecastWriter;
  transient: CachecastWriter;
  stream: CachecastWriter;
  bases: { cc: string; stream: string; bento: string };
  close(): Promise<void>;
}

export async function openWriters(rabbitmqUrl: string, redisUrl: string, suffix: string): Promise<Systems> {
  const redis = connectRedis(redisUrl, silentLogger, 'bench-writer');
  await redis.connected;
  const bases = {
    cc: `bench:prop:${suffix}:cc`,
    stream: `bench:prop:${suffix}:st`,
    bento: `bench-prop-${suffix}`,
  };
  const url = new URL(redisUrl);
  const connection = {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
  };
  const bento = new BentoCache({
    default: 'multi',
    prefix: bases.bento,
    stores: {
      multi: bentostore()
        .useL1Layer(memoryDriver({ maxSize: '10mb' }))
        .useL2Layer(redisDriver({ connection }))
        .useBus(redisBusDriver({ connection })),
    },
  });
  const persistent = await CachecastWriter.open(new RabbitMQBus({ url: rabbitmqUrl }), redis, bases.cc);
  const transient = await CachecastWriter.open(
    new RabbitMQBus({ url: rabbitmqUrl, eventDelivery: 'transient' }),
    redis,
    bases.cc,
  );
  const streamBus = new StreamBus(rabbitmqUrl);
  const stream = await CachecastWriter.open(streamBus, redis, bases.stream);
  await streamBus.prepare(BLACKLIST_TOPIC);
  await sleepMs(500); // the stream's writer starts after the declare returns
  // A first revocation gives each key base its epoch before any replica loads
  // it: an event in a new epoch makes a replica reload rather than apply it.
  await persistent.revoke(nextJti());
  await stream.revoke(nextJti());
  return {
    redis,
    bento,
    persistent,
    transient,
    stream,
    bases,
    async close() {
      await persistent.close();
      await transient.close();
      await streamBus.drop(BLACKLIST_TOPIC);
      await stream.close();
      await bento.disconnectAll();
      // This run's keys only: the key bases carry the run's suffix.
      for (const pattern of [`bench:prop:${suffix}:*`, `${bases.bento}*`]) {
        for await (const keys of scanKeys(redis.client, pattern)) {
          if (keys.length > 0) await redis.client.unlink(keys);
        }
      }
      await redis.close();
    },
  };
}

/** A fresh key for the next cachecast event. */
export function nextJti(): string {
  return randomUUID();
}
