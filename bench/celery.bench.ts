// Celery round trip through the match worker: Python's send_task ->
// character.match -> the worker (match + SETEX/PUBLISH to the result backend
// + ack) -> AsyncResult.get() returns, measured from one Python process that
// sends tasks one after another (test/interop/celery_latency.py).
//
// - with 1 and with 2 cachecast worker processes (the real `serve match-worker`
//   wiring, each in its own process; this file re-runs itself as the worker);
// - baseline: the seed's own worker, a Python Celery worker (-P threads -c 4)
//   matching from an in-process dict (test/interop/celery_worker.py);
// - its Node peer: celery-node (npm), the same dict lookup as the Python
//   worker's task (this file re-runs itself as that worker too);
// - each with 1 and with 2 worker processes: the round trip (sequential), and
//   tasks/s over a burst sent without waiting (test/interop/celery_latency.py burst);
// - ceiling: the same hops without Celery on either side: kombu publish ->
//   a bare kombu consumer -> Redis SETEX+PUBLISH -> the sender's subscription.
//
// Uses Redis DB 15 only (REDIS_BENCH_URL), flushed before and after, and a
// PostgreSQL schema of its own, dropped after.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { testDatabase } from '../test/support/env.ts';
import { createWorker } from 'celery-node';
import { Connection } from 'rabbitmq-client';
import { createClient } from 'redis';
import type { Character } from '../src/datasets/catalog.ts';
import { startMatchWorkerService } from '../src/services/match-worker/main.ts';
import { MATCH_QUEUE } from '../src/services/match-worker/worker.ts';
import type { Row } from './lib.ts';
import {
  fmt,
  median,
  percentile,
  printRows,
  benchRabbitmqUrl,
  REDIS_BENCH_URL,
  row,
  sleepMs,
  writeResult,
} from './lib.ts';

const RABBITMQ_URL = benchRabbitmqUrl();
const CELERY_NODE_VERSION = (
  JSON.parse(
    readFileSync(join(import.meta.dirname, '..', 'node_modules', 'celery-node', 'package.json'), 'utf8'),
  ) as {
    version: string;
  }
).version;
const CELERY_VERSION = execFileSync('/usr/bin/python3', ['-c', 'import celery; print(celery.__version__)'], {
  encoding: 'utf8',
}).trim();

const DATABASE_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const PYTHON = '/usr/bin/python3';
const INTEROP = join(import.meta.dirname, '..', 'test', 'interop');
const N = Number(process.env.BENCH_CELERY_TASKS ?? 1000);
const WARMUP = 50; // unmeasured tasks at the start of each run
const BURST = Number(process.env.BENCH_CELERY_BURST ?? 500); // tasks per burst, one burst per round
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
} else if (process.env.CELERY_BENCH_ROLE === 'celery-node') {
  // celery-node's worker, as its README sets one up, with the Python worker's task.
  const byLabel = new Map<string, Character>();
  for (const c of JSON.parse(process.env.CATALOG_JSON ?? '[]') as Character[]) {
    if (!byLabel.has(c.match_label)) byLabel.set(c.match_label, c);
  }
  const worker = createWorker(process.env.RABBITMQ_URL, process.env.REDIS_URL, MATCH_QUEUE);
  worker.register('character.match_reward', (classification: { middle_category?: string } | null) => {
    return byLabel.get(classification?.middle_category ?? '') ?? null;
  });
  await worker.start();
  process.stdout.write('consuming\n');
  process.on('SIGTERM', () => process.exit(0)); // its stop() is not implemented
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

/** tasks/s over one burst (celery_latency.py burst). */
async function burst(args: string[]): Promise<number> {
  const p = start(PYTHON, [join(INTEROP, 'celery_latency.py'), 'burst', ...args.slice(1)], process.env);
  await p.exited;
  const line = p
    .output()
    .trim()
    .split('\n')
    .find((l) => l.startsWith('{"tasks_per_s"'));
  if (!line) throw new Error(`celery_latency.py burst failed: ${p.output()}`);
  const { tasks_per_s, errors } = JSON.parse(line) as { tasks_per_s: number; errors: number };
  // A worker too slow to finish in 30 s is measured on what it did; said in the output.
  if (errors > 0) console.warn(`celery_latency.py burst: ${errors} task(s) not done within 30 s`);
  return tasks_per_s;
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
      /** Answers Celery tasks: measured in bursts too. */
      burst: boolean;
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
      burst: true,
    });
    const celeryNodeWorkers = (count: number): Variant => ({
      name: `celery-node x${count}`,
      async up() {
        const env = {
          ...process.env,
          CELERY_BENCH_ROLE: 'celery-node',
          RABBITMQ_URL,
          REDIS_URL: REDIS_BENCH_URL,
          CATALOG_JSON: JSON.stringify(catalog),
        };
        const procs = Array.from({ length: count }, () =>
          start(process.execPath, ['--import', 'tsx', import.meta.filename], env),
        );
        running.push(...procs);
        for (const p of procs) await waitOutput(p, /consuming/, 'a celery-node worker');
        return procs;
      },
      args: celeryArgs,
      burst: true,
    });
    const pythonProc = (args: string[], env: NodeJS.ProcessEnv, ready: RegExp, cwd?: string) => async () => {
      const proc = start(PYTHON, args, env, cwd);
      running.push(proc);
      await waitOutput(proc, ready, `python ${args.join(' ')}`, 60_000);
      return [proc];
    };
    // Baseline: the seed's Python Celery worker (threads pool, local dict), 1 or 2 processes.
    const pythonCelery = (count: number): Variant => ({
      name: `python celery x${count}`,
      async up() {
        const procs: Proc[] = [];
        for (let i = 0; i < count; i++) {
          procs.push(
            ...(await pythonProc(
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
                `bench-${process.pid}-${i}@%h`,
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
            )()),
          );
        }
        return procs;
      },
      args: celeryArgs,
      burst: true,
    });
    const variants: Variant[] = [
      nodeWorkers(1),
      nodeWorkers(2),
      pythonCelery(1),
      pythonCelery(2),
      celeryNodeWorkers(1),
      celeryNodeWorkers(2),
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
        burst: true,
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
        burst: false,
      },
    ];

    // Interleaved rounds, so that the (shared, noisy) machine's load hits every variant alike.
    const results = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const rates = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const perRound = Math.ceil(N / ROUNDS);
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of variants) {
        const procs = await v.up();
        results.get(v.name)!.push(...(await python(v.args(perRound))));
        if (v.burst) rates.get(v.name)!.push(await burst(celeryArgs(BURST)));
        for (const p of procs) await stop(p);
        // Tasks a stopped worker left unacked must not reach the next variant.
        await amqp.queuePurge({ queue: MATCH_QUEUE });
      }
      console.log(
        `round ${round + 1}/${ROUNDS}: ` +
          variants.map((v) => `${v.name} p50 ${fmt(percentile(results.get(v.name)!, 50))} ms`).join(', '),
      );
    }

    const rows: Row[] = [];
    const p = (name: string, q: number): number => percentile(results.get(name)!, q);
    // A burst's figure as time per task (every row is lower-is-better); tasks/s in the note.
    const perTask = (name: string): number => 1000 / median(rates.get(name)!);
    const rate = (name: string): string => `${fmt(median(rates.get(name)!))} tasks/s`;
    const bareCeiling = (q: number) => ({
      label: `Celery client + bare kombu worker p${q}`,
      value: p('bare worker', q),
    });
    const bareBurst = { label: 'Celery client + bare kombu worker, burst', value: perTask('bare worker') };
    for (const workers of [1, 2]) {
      const ours = `node x${workers}`;
      const py = `python celery x${workers}`;
      const cn = `celery-node x${workers}`;
      for (const q of [50, 99]) {
        rows.push(
          row(`Celery round trip p${q}, ${workers} cachecast worker process(es)`, p(ours, q), 'ms', {
            ceiling: bareCeiling(q),
            baseline: { label: `Python Celery worker (-P threads -c 4) x${workers} p${q}`, value: p(py, q) },
            note: `celery-node x${workers}: ${fmt(p(cn, q))} ms`,
            headline: workers === 1 && q === 50 ? 'Celery send_task -> get(), 1 worker, p50' : undefined,
          }),
        );
      }
      rows.push(
        row(
          `Celery burst of ${BURST}, ${workers} cachecast worker process(es): time per task`,
          perTask(ours),
          'ms',
          {
            ceiling: bareBurst,
            baseline: { label: `Python Celery worker x${workers}`, value: perTask(py) },
            note: `${rate(ours)}; Python Celery ${rate(py)}; celery-node ${rate(cn)}`,
          },
        ),
      );
      for (const [label, name] of [
        ['Python Celery', py],
        ['celery-node', cn],
      ] as const) {
        for (const q of [50, 99]) {
          rows.push(
            row(`${label} worker round trip p${q}, ${workers} process(es)`, p(name, q), 'ms', {
              ceiling: bareCeiling(q),
            }),
          );
        }
        rows.push(
          row(`${label} burst of ${BURST}, ${workers} process(es): time per task`, perTask(name), 'ms', {
            ceiling: bareBurst,
            note: rate(name),
          }),
        );
      }
    }
    for (const q of [50, 99]) {
      rows.push(
        row(`Celery client + bare kombu worker round trip p${q}`, p('bare worker', q), 'ms', {
          ceiling: { label: `kombu+redis echo, no Celery p${q}`, value: p('kombu echo', q) },
        }),
      );
    }
    rows.push(
      row(
        `Celery client + bare kombu worker burst of ${BURST}: time per task`,
        perTask('bare worker'),
        'ms',
        { note: rate('bare worker') },
      ),
    );
    printRows(`Celery round trip, ${N} sequential tasks from one Python process; bursts of ${BURST}`, rows);
    writeResult('celery', rows, [
      `${ROUNDS * Math.ceil(N / ROUNDS)} tasks per variant, sent one after another (send_task then AsyncResult.get()) from one Python 3 process with Celery ${CELERY_VERSION} and no configuration beyond the URLs; ${ROUNDS} interleaved rounds, each with a fresh far end and ${WARMUP} unmeasured tasks first.`,
      `Bursts: per round and variant, ${BURST} send_task calls in a row from the same Python process, until every result is stored (polled in Redis, 30 s at most); tasks/s = results stored / time from the first send, the median of the ${ROUNDS} rounds, shown as time per task (1 / tasks/s). One Python sender: the bare worker's burst is the most this client can send and collect.`,
      'cachecast workers: MATCH_CONCURRENCY 4, MATCH_PREFETCH 16, each a separate `serve match-worker` process; the catalog (13 characters) loaded from PostgreSQL; the task validates its input, matches, stores the result (and a grant when it names a user) and acks only then (late ack: a worker that dies mid-task leaves the task to another). With sequential sending a second worker cannot help latency; the row shows it costs none.',
      `Python Celery: the seed's worker (-P threads -c 4, prefetch multiplier 4: 16 unacked), its task a dict lookup by middle_category; default acks (task_acks_late off): a task is acked as it starts, before it runs. In bursts it stalls in pauses of several seconds (seen in its log: tasks done in groups about 10 s apart) that the sequential round trip never shows; not investigated further. celery-node ${CELERY_NODE_VERSION} (npm): the same dict lookup; it acks each message on delivery, before running the task, and sets no prefetch limit (RabbitMQ pushes every queued task to it); results through its Redis backend (SETEX + PUBLISH, not awaited before the next task).`,
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
