// Celery round trip through the match worker: Python's send_task ->
// character.match -> the worker (match + SETEX/PUBLISH to the result backend
// + ack) -> AsyncResult.get() returns, measured from one Python process that
// sends tasks one after another (test/interop/celery_latency.py).
//
// - with 1 and with 2 cachecast worker processes (the real `serve match-worker`
//   wiring, each in its own process; this file re-runs itself as the worker);
// - baseline: the seed's own worker, a Python Celery worker (-P threads -c 4)
//   matching from an in-process dict (test/interop/celery_worker.py);
// - ceiling: the same hops without Celery on either side: kombu publish ->
//   a bare kombu consumer -> Redis SETEX+PUBLISH -> the sender's subscription.
//
// Uses Redis DB 15 only (REDIS_BENCH_URL), flushed before and after, and a
// PostgreSQL schema of its own, dropped after.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { testDatabase } from '../test/support/env.ts';
import { Connection } from 'rabbitmq-client';
import { createClient } from 'redis';
import type { Character } from '../src/datasets/catalog.ts';
import { startMatchWorkerService } from '../src/services/match-worker/main.ts';
import { MATCH_QUEUE } from '../src/services/match-worker/worker.ts';
import type { Row } from './lib.ts';
import {
  fmt,
  percentile,
  printRows,
  benchRabbitmqUrl,
  REDIS_BENCH_URL,
  row,
  sleepMs,
  writeResult,
} from './lib.ts';

const RABBITMQ_URL = benchRabbitmqUrl();

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const PYTHON = '/usr/bin/python3';
const INTEROP = join(import.meta.dirname, '..', 'test', 'interop');
const N = Number(process.env.BENCH_CELERY_TASKS ?? 1000);
const WARMUP = 50; // unmeasured tasks at the start of each run
const ROUNDS = 3;
const CLASSIFICATION = JSON.stringify({
  major_category: '재활용',
  middle_category: 'label-3',
  minor_category: 'x',
});

if (process.env.CELERY_BENCH_ROLE === 'worker') {
  // A worker process: the same wiring as `cachecast serve match-worker`.
  const service = await startMatchWorkerService(process.env);
  await service.consuming;
  process.stdout.write('consuming\n');
  process.on('SIGTERM', () => {
    void service.close().then(() => process.exit(0));
  });
} else {
  await main();
}

interface Proc {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<void>;
}

function start(command: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Proc {
  const proc = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  return { proc, output: () => output, exited };
}

async function waitOutput(p: Proc, pattern: RegExp, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(p.output())) {
    if (p.proc.exitCode !== null) throw new Error(`${what} exited: ${p.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${p.output()}`);
    await sleepMs(20);
  }
}

async function stop(p: Proc): Promise<void> {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  p.proc.kill('SIGTERM');
  const timer = setTimeout(() => p.proc.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(timer);
}

async function python(args: string[]): Promise<number[]> {
  const p = start(PYTHON, [join(INTEROP, 'celery_latency.py'), ...args], process.env);
  await p.exited;
  const line = p
    .output()
    .trim()
    .split('\n')
    .find((l) => l.startsWith('{"latencies_ms"'));
  if (!line) throw new Error(`celery_latency.py ${args[0]} failed: ${p.output()}`);
  const { latencies_ms, errors } = JSON.parse(line) as { latencies_ms: number[]; errors: number };
  // A lost sample (no answer in 30 s) is reported; more than 1% means the setup is broken.
  if (errors > latencies_ms.length / 100) throw new Error(`celery_latency.py ${args[0]}: ${errors} errors`);
  if (errors > 0) console.warn(`celery_latency.py ${args[0]}: ${errors} sample(s) without an answer`);
  return latencies_ms;
}

async function main(): Promise<void> {
  // A migrated schema of its own, dropped afterwards.
  const db = await testDatabase();
  const { pool, schema } = db;
  const redis = createClient({ url: REDIS_BENCH_URL });
  await redis.connect();
  await redis.flushDb();
  const amqp = new Connection(RABBITMQ_URL);
  const running: Proc[] = [];
  try {
    const catalog: Character[] = Array.from({ length: 13 }, (_, i) => ({
      id: randomUUID(),
      code: `eco-${i}`,
      name: `Character ${i}`,
      match_label: `label-${i}`,
      type_label: 'recyclable',
      dialog: `Dialog line for character ${i}.`,
      is_default: false,
    }));
    for (const c of catalog) {
      await pool.query(
        `INSERT INTO characters (id, code, name, match_label, type_label, dialog, is_default)
         VALUES ($1,$2,$3,$4,$5,$6,$7)`,
        [c.id, c.code, c.name, c.match_label, c.type_label, c.dialog, c.is_default],
      );
    }
    // The contract's queue, as Celery declares it, emptied of leftovers.
    await amqp.exchangeDeclare({ exchange: MATCH_QUEUE, type: 'direct', durable: true });
    await amqp.queueDeclare({ queue: MATCH_QUEUE, durable: true });
    await amqp.queueBind({ exchange: MATCH_QUEUE, queue: MATCH_QUEUE, routingKey: MATCH_QUEUE });
    await amqp.queuePurge({ queue: MATCH_QUEUE });

    const dbUrl = new URL(DATABASE_URL);
    dbUrl.searchParams.set('options', `-c search_path=${schema}`);
    const workerEnv: NodeJS.ProcessEnv = {
      ...process.env,
      CELERY_BENCH_ROLE: 'worker',
      RABBITMQ_URL,
      REDIS_URL: REDIS_BENCH_URL,
      DATABASE_URL: dbUrl.toString(),
      ADMIN_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      CELERY_RESULT_EXPIRES: '600',
    };

    const celeryArgs = (n: number): string[] => [
      'celery',
      RABBITMQ_URL,
      REDIS_BENCH_URL,
      String(n),
      String(WARMUP),
      CLASSIFICATION,
    ];
    const echoQueue = `bench.celery.echo.${randomUUID().slice(0, 8)}`;
    interface Variant {
      name: string;
      /** Starts the far end; resolves once it consumes. */
      up(): Promise<Proc[]>;
      args(n: number): string[];
    }
    const nodeWorkers = (count: number): Variant => ({
      name: `node x${count}`,
      async up() {
        const procs = Array.from({ length: count }, () =>
          start(process.execPath, ['--import', 'tsx', import.meta.filename], workerEnv),
        );
        running.push(...procs);
        for (const p of procs) await waitOutput(p, /consuming/, 'a cachecast worker');
        return procs;
      },
      args: celeryArgs,
    });
    const pythonProc = (args: string[], env: NodeJS.ProcessEnv, ready: RegExp, cwd?: string) => async () => {
      const proc = start(PYTHON, args, env, cwd);
      running.push(proc);
      await waitOutput(proc, ready, `python ${args.join(' ')}`, 60_000);
      return [proc];
    };
    const variants: Variant[] = [
      nodeWorkers(1),
      nodeWorkers(2),
      {
        // Baseline: the seed's Python Celery worker (threads pool, local dict).
        name: 'python celery',
        up: pythonProc(
          [
            '-m',
            'celery',
            '-A',
            'celery_worker',
            'worker',
            '-P',
            'threads',
            '-c',
            '4',
            '-Q',
            MATCH_QUEUE,
            '--loglevel=info',
            '--without-gossip',
            '--without-mingle',
            '--without-heartbeat',
            '-n',
            `bench-${process.pid}@%h`,
          ],
          {
            ...process.env,
            PYTHONDONTWRITEBYTECODE: '1',
            CELERY_BROKER: RABBITMQ_URL,
            CELERY_BACKEND: REDIS_BENCH_URL,
            CATALOG_JSON: JSON.stringify(catalog),
          },
          /ready\./,
          INTEROP,
        ),
        args: celeryArgs,
      },
      {
        // Ceiling for the worker side: the same Celery client, answered by a
        // bare kombu consumer that does no work (no match, no validation, no metrics).
        name: 'bare worker',
        up: pythonProc(
          [join(INTEROP, 'celery_latency.py'), 'echo-worker', RABBITMQ_URL, REDIS_BENCH_URL, MATCH_QUEUE],
          process.env,
          /ready/,
        ),
        args: celeryArgs,
      },
      {
        // Ceiling for the whole path: the same hops with bare kombu and redis-py on both sides.
        name: 'kombu echo',
        up: pythonProc(
          [join(INTEROP, 'celery_latency.py'), 'echo-worker', RABBITMQ_URL, REDIS_BENCH_URL, echoQueue],
          process.env,
          /ready/,
        ),
        args: (n) => ['echo', RABBITMQ_URL, REDIS_BENCH_URL, echoQueue, String(n), String(WARMUP)],
      },
    ];

    // Interleaved rounds, so that the (shared, noisy) machine's load hits every variant alike.
    const results = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const perRound = Math.ceil(N / ROUNDS);
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of variants) {
        const procs = await v.up();
        results.get(v.name)!.push(...(await python(v.args(perRound))));
        for (const p of procs) await stop(p);
      }
      console.log(
        `round ${round + 1}/${ROUNDS}: ` +
          variants.map((v) => `${v.name} p50 ${fmt(percentile(results.get(v.name)!, 50))} ms`).join(', '),
      );
    }

    const rows: Row[] = [];
    const p = (name: string, q: number): number => percentile(results.get(name)!, q);
    for (const workers of [1, 2]) {
      for (const q of [50, 99]) {
        rows.push(
          row(
            `Celery round trip p${q}, ${workers} cachecast worker process(es)`,
            p(`node x${workers}`, q),
            'ms',
            {
              ceiling: { label: `Celery client + bare kombu worker p${q}`, value: p('bare worker', q) },
              baseline: {
                label: `Python Celery worker (-P threads -c 4) p${q}`,
                value: p('python celery', q),
              },
              headline: workers === 1 && q === 50 ? 'Celery send_task -> get(), 1 worker, p50' : undefined,
            },
          ),
        );
      }
    }
    for (const q of [50, 99]) {
      rows.push(
        row(`Python Celery worker round trip p${q}`, p('python celery', q), 'ms', {
          ceiling: { label: `Celery client + bare kombu worker p${q}`, value: p('bare worker', q) },
        }),
        row(`Celery client + bare kombu worker round trip p${q}`, p('bare worker', q), 'ms', {
          ceiling: { label: `kombu+redis echo, no Celery p${q}`, value: p('kombu echo', q) },
        }),
      );
    }
    printRows(`Celery round trip, ${N} sequential tasks from one Python process`, rows);
    writeResult('celery', rows, [
      `${ROUNDS * Math.ceil(N / ROUNDS)} tasks per variant, sent one after another (send_task then AsyncResult.get()) from one Python 3 process with Celery 5.2.6 and no configuration beyond the URLs; ${ROUNDS} interleaved rounds, each with a fresh far end and ${WARMUP} unmeasured tasks first.`,
      'cachecast workers: MATCH_CONCURRENCY 4, MATCH_PREFETCH 16, each a separate `serve match-worker` process; the catalog (13 characters) loaded from PostgreSQL. With sequential sending a second worker cannot help latency; the row shows it costs none.',
      'Ceilings: (1) the same Celery client answered by a bare kombu consumer in Python that stores a null result the way Celery does and acks (a worker that does nothing): the floor for any worker; (2) the same hops with no Celery on either side (kombu publish, bare consumer, redis-py SETEX+PUBLISH, pub/sub wait): what is left is the Celery client.',
    ]);
  } finally {
    for (const proc of running) await stop(proc);
    await amqp.queuePurge({ queue: MATCH_QUEUE }).catch(() => undefined);
    await amqp.close();
    await redis.flushDb();
    await redis.quit();
    await db.drop();
  }
}
