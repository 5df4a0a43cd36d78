import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Connection } from 'rabbitmq-client';
import type { GrantMessage } from '../../src/catalog/grant.ts';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import type { RedisClient } from '../../src/redis/client.ts';
import { encodeCeleryTask } from '../../src/celery/protocol.ts';
import { startMatchWorkerService } from '../../src/services/match-worker/main.ts';
import { taskMetaKey } from '../../src/celery/result-backend.ts';
import { MATCH_DLQ, MATCH_QUEUE } from '../../src/services/match-worker/worker.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, RABBITMQ_URL, REDIS_URL, redisClient, testDatabase } from '../support/env.ts';
import { waitFor } from '../support/wait.ts';

const TASKS = 200;

/** Forwards TCP with a fixed delay per chunk (order kept): a slow Redis, so tasks are in flight when the kill comes. */
class SlowProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  port = 0;

  constructor(host: string, port: number, delayMs: number) {
    this.#server = createServer((client) => {
      const upstream = connect(port, host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => {
          this.#sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
        s.on('error', () => s.destroy());
      }
      client.on('data', (chunk: Buffer) => setTimeout(() => upstream.write(chunk), delayMs));
      upstream.on('data', (chunk: Buffer) => client.write(chunk));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

let db: TestDatabase;
let redis: RedisClient;
let amqp: Connection;
const closers: Array<() => Promise<void>> = [];

const characters: Character[] = ['plastic', 'metal', 'glass', 'paper'].map((label) => ({
  id: randomUUID(),
  code: `code-${label}`,
  name: `Name ${label}`,
  match_label: label,
  type_label: null,
  dialog: null,
  is_default: false,
}));

before(async () => {
  db = await testDatabase();
  for (const c of characters) await upsertCharacter(db.pool, c, 'unused.topic');
  redis = await redisClient();
  amqp = new Connection(RABBITMQ_URL);
  amqp.on('error', () => undefined);
  await purge();
});

after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await purge();
  await amqp.close();
  await redis.quit();
  await db.drop();
});

async function purge(): Promise<void> {
  await amqp.exchangeDeclare({ exchange: MATCH_QUEUE, type: 'direct', durable: true });
  for (const queue of [MATCH_QUEUE, MATCH_DLQ, GRANTS_QUEUE]) {
    await amqp.queueDeclare({ queue, durable: true });
    await amqp.queuePurge({ queue });
  }
  await amqp.queueBind({ exchange: MATCH_QUEUE, queue: MATCH_QUEUE, routingKey: MATCH_QUEUE });
}

function env(redisUrl: string): Record<string, string> {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  return {
    RABBITMQ_URL,
    REDIS_URL: redisUrl,
    DATABASE_URL: url.toString(),
    ADMIN_PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    MATCH_CONCURRENCY: '4',
    MATCH_PREFETCH: '16',
  };
}

describe('faults: a match worker killed while tasks are in flight', () => {
  it('loses no task: after a restart every task sent has its result, and every grant is published', async (t) => {
    const slow = await new SlowProxy(
      new URL(REDIS_URL).hostname,
      Number(new URL(REDIS_URL).port || 6379),
      4,
    ).start();
    closers.push(() => slow.close());
    const redisUrl = new URL(REDIS_URL);
    redisUrl.hostname = '127.0.0.1';
    redisUrl.port = String(slow.port);

    // Queued before the worker starts, as raw publishes in Celery's format; every
    // other task names a user (-> a grant).
    const tasks = Array.from({ length: TASKS }, (_, i) => {
      const character = characters[i % characters.length]!;
      const userId = i % 2 === 0 ? `user-${i}` : undefined;
      return {
        ...encodeCeleryTask({ classification: { middle_category: character.match_label }, userId }),
        character,
        userId,
      };
    });
    const publisher = amqp.createPublisher({ confirm: true });
    for (const t of tasks)
      await publisher.send({ exchange: MATCH_QUEUE, routingKey: MATCH_QUEUE, ...t.properties }, t.body);
    await publisher.close();

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'match-worker-process.ts')],
      { env: { ...process.env, ...env(redisUrl.toString()) }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_c, signal) => resolve(signal)),
    );
    closers.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    await waitFor(() => output.includes('consuming'), 'the child worker consuming', 30_000);
    const completed = (): number => Number(/completed (\d+)\n(?!.*completed)/s.exec(output)?.[1] ?? 0);

    await waitFor(() => completed() >= 40, 'the child completing some tasks', 30_000);
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    const doneBeforeKill = completed();
    assert.ok(doneBeforeKill < TASKS, `killed mid-way (${doneBeforeKill} of ${TASKS} completed)`);
    const stored = async (): Promise<number> => {
      const values = await redis.mGet(tasks.map((t) => taskMetaKey(t.id)));
      return values.filter((v) => v !== null).length;
    };
    const storedAtKill = await stored();
    assert.ok(storedAtKill < TASKS, `results missing at the kill (${storedAtKill})`);
    // The tasks the dead worker held unacked are back in the queue, with the ones it never took.
    // Every acked task had its result stored first, so at least TASKS - storedAtKill come back;
    // the broker requeues them once it notices the dead connection, so wait for it.
    let messageCount = 0;
    await waitFor(
      async () => {
        ({ messageCount } = await amqp.queueDeclare({ queue: MATCH_QUEUE, passive: true }));
        return messageCount >= TASKS - storedAtKill;
      },
      `the unacked tasks requeued (at least ${TASKS - storedAtKill})`,
      10_000,
    );

    t.diagnostic(
      `at the kill: ${doneBeforeKill} acked, ${storedAtKill} results stored, ${messageCount} queued`,
    );
    const restarted = await startMatchWorkerService(env(REDIS_URL));
    closers.push(() => restarted.close());
    await restarted.consuming;
    await waitFor(async () => (await stored()) === TASKS, 'a result for every task', 30_000);
    await waitFor(
      async () =>
        (await amqp.queueDeclare({ queue: MATCH_QUEUE, passive: true })).messageCount === 0 &&
        restarted.worker.stats.in_flight === 0,
      'the queue drained',
      10_000,
    );

    const values = await redis.mGet(tasks.map((t) => taskMetaKey(t.id)));
    for (const [i, raw] of values.entries()) {
      const meta = JSON.parse(raw!) as { status: string; result: Character; task_id: string };
      assert.equal(meta.status, 'SUCCESS', `task ${i}`);
      assert.deepEqual(meta.result, tasks[i]!.character, `task ${i}`);
    }
    assert.equal(restarted.worker.stats.dead_lettered, 0);

    // Every grant was published at least once; duplicates only for redelivered tasks.
    const grants: GrantMessage[] = [];
    for (;;) {
      const msg = await amqp.basicGet({ queue: GRANTS_QUEUE, noAck: true });
      if (!msg) break;
      grants.push((Buffer.isBuffer(msg.body) ? JSON.parse(msg.body.toString()) : msg.body) as GrantMessage);
    }
    const expected = tasks.filter((t) => t.userId !== undefined);
    const byTask = new Map<string, GrantMessage[]>();
    for (const g of grants) byTask.set(g.task_id, [...(byTask.get(g.task_id) ?? []), g]);
    for (const t of expected) {
      const got = byTask.get(t.id);
      assert.ok(got && got.length >= 1, `grant for task ${t.id}`);
      assert.equal(got[0]!.user_id, t.userId);
      assert.equal(got[0]!.character_id, t.character.id);
    }
    assert.equal(byTask.size, expected.length, 'no grant for a task without a user');
    assert.ok(grants.length - expected.length <= 16, `at most a prefetch of duplicates (${grants.length})`);
    t.diagnostic(`${grants.length} grants for ${expected.length} tasks with a user`);
    await redis.del(tasks.map((t) => taskMetaKey(t.id)));
  });
});
