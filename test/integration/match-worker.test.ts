import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { Connection } from 'rabbitmq-client';
import { createClient } from 'redis';
import type { SyncMessage } from 'rabbitmq-client';
import type { GrantMessage } from '../../src/catalog/grant.ts';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import type { RedisNodeClient as RedisClient } from '../../src/redis/client.ts';
import { encodeCeleryTask, parseCeleryTask } from '../../src/celery/protocol.ts';
import type { MatchWorkerService } from '../../src/services/match-worker/main.ts';
import { startMatchWorkerService } from '../../src/services/match-worker/main.ts';
import {
  celeryDateDone,
  pythonJson,
  revokedMeta,
  successMeta,
  taskMetaKey,
} from '../../src/celery/result-backend.ts';
import { MATCH_DLQ, MATCH_QUEUE, MatchWorker } from '../../src/services/match-worker/worker.ts';
import { deferred } from '../../src/util/deferred.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, RABBITMQ_URL, REDIS_URL, redisClient, testDatabase } from '../support/env.ts';
import { rabbitProxy, testBus, urlThrough } from '../support/rabbit.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { delay, waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const PYTHON = '/usr/bin/python3';
const CELERY_SEND = join(import.meta.dirname, '../interop/celery_send.py');

let db: TestDatabase;
let redis: RedisClient;
let amqp: Connection;
const closers: Array<() => Promise<void>> = [];

function char(code: string, match_label: string): Character {
  return {
    id: randomUUID(),
    code,
    name: `Name ${code}`,
    match_label,
    type_label: 'type',
    dialog: `hello from ${code}`,
    is_default: false,
  };
}
const plastic = char('pet', '플라스틱');
const metal = char('can', 'metal');
const glass = char('bottle', 'glass');

before(async () => {
  db = await testDatabase();
  for (const c of [plastic, metal, glass]) await upsertCharacter(db.pool, c, 'unused.topic');
  redis = await redisClient();
  amqp = new Connection(RABBITMQ_URL);
  amqp.on('error', () => undefined);
});

after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await purgeQueues();
  await amqp.close();
  await redis.quit();
  await db.drop();
});

/** DATABASE_URL pointing at this file's schema. */
function databaseUrl(): string {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  return url.toString();
}

async function startService(env: Record<string, string> = {}): Promise<MatchWorkerService> {
  const service = await startMatchWorkerService({
    RABBITMQ_URL,
    REDIS_URL,
    DATABASE_URL: databaseUrl(),
    ADMIN_PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    ...env,
  });
  closers.push(() => service.close());
  return service;
}

/** The queues of the contract, declared as their owners do, emptied. */
async function purgeQueues(): Promise<void> {
  await amqp.exchangeDeclare({ exchange: MATCH_QUEUE, type: 'direct', durable: true });
  await amqp.queueDeclare({ queue: MATCH_QUEUE, durable: true });
  await amqp.queueBind({ exchange: MATCH_QUEUE, queue: MATCH_QUEUE, routingKey: MATCH_QUEUE });
  for (const queue of [MATCH_QUEUE, MATCH_DLQ, GRANTS_QUEUE]) {
    await amqp.queueDeclare({ queue, durable: true }).catch(async () => {
      // Left with other arguments by a test that failed half-way: put the contract's back.
      await amqp.queueDelete({ queue });
      await amqp.queueDeclare({ queue, durable: true });
    });
    await amqp.queuePurge({ queue });
  }
}

async function drain(queue: string): Promise<SyncMessage[]> {
  const out: SyncMessage[] = [];
  for (;;) {
    const msg = await amqp.basicGet({ queue, noAck: true });
    if (!msg) return out;
    out.push(msg);
  }
}

async function messageCount(queue: string): Promise<number> {
  return (await amqp.queueDeclare({ queue, passive: true })).messageCount;
}

interface CeleryLine {
  task_id: string;
  ok: boolean;
  result?: unknown;
  error?: string;
  module?: string;
  message?: string;
}

/** Runs the Python Celery client; one line per classification. */
async function celery(classifications: unknown[], options: string[] = []): Promise<CeleryLine[]> {
  const { stdout } = await run(
    PYTHON,
    [
      CELERY_SEND,
      RABBITMQ_URL,
      REDIS_URL,
      '--timeout',
      '10',
      ...options,
      ...classifications.map((c) => JSON.stringify(c)),
    ],
    { timeout: 60_000 },
  );
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as CeleryLine);
}

async function readyz(service: MatchWorkerService): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${service.endpoints.admin}/readyz`);
  return { status: res.status, body: await res.json() };
}

async function publishRaw(body: Buffer, properties: object, routingKey: string = MATCH_QUEUE): Promise<void> {
  const publisher = amqp.createPublisher({ confirm: true });
  try {
    await publisher.send({ exchange: '', routingKey, durable: true, ...properties }, body);
  } finally {
    await publisher.close();
  }
}

describe('match worker: start-up and failed writes (no other worker running)', () => {
  beforeEach(purgeQueues);

  /** A worker of its own (not the service's), on a synced replica of this file's schema. */
  async function ownWorker(
    t: TestContext,
    redisClient: RedisClient,
    busProxy?: TcpProxy,
  ): Promise<MatchWorker> {
    const bus = await testBus(busProxy);
    const replica = new ReplicatedCache<Character>({
      dataset: catalogDataset,
      bus,
      source: catalogSource(db.pool),
      versionCheckIntervalMs: 0,
    });
    await replica.start();
    const worker = new MatchWorker({
      connection: RABBITMQ_URL,
      redis: redisClient,
      replica,
      retryDelayMs: 100,
    });
    // Closed at the end of the test (it must not compete with the service below).
    t.after(async () => {
      await worker.close();
      await replica.close();
      await bus.close();
    });
    await worker.start();
    replicas.set(worker, replica);
    return worker;
  }
  const replicas = new Map<MatchWorker, ReplicatedCache<Character>>();

  it('keeps serving from a replica that went degraded (catalog policy: serve)', async (t) => {
    const proxy = await rabbitProxy();
    t.after(() => proxy.close());
    const worker = await ownWorker(t, redis, proxy);
    const replica = replicas.get(worker)!;
    proxy.cut(); // the replica's bus only: the worker's own connection stays up
    await waitFor(() => replica.state === 'degraded', 'the replica degraded');
    const task = encodeCeleryTask({ classification: { middle_category: 'glass' } });
    await publishRaw(task.body, task.properties);
    await waitFor(async () => (await redis.get(taskMetaKey(task.id))) !== null, 'the result');
    const meta = JSON.parse((await redis.get(taskMetaKey(task.id)))!) as { result: Character };
    assert.deepEqual(meta.result, glass);
    assert.equal(replica.state, 'degraded');
    assert.equal(worker.consuming, true);
    await redis.del(taskMetaKey(task.id));
  });

  it('/readyz is 503 until the catalog replica has synced, then 200 with the consumer attached', async () => {
    const proxy = await rabbitProxy();
    proxy.cut(); // the broker is unreachable: the replica cannot subscribe and load
    closers.push(() => proxy.close());
    const service = await startService({ RABBITMQ_URL: urlThrough(proxy) });
    let probe = await readyz(service);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body, { status: 'not_ready', replicas: { catalog: 'syncing' } });
    await delay(500);
    assert.equal((await readyz(service)).status, 503, 'still not ready while the broker is away');
    assert.equal(service.worker.consuming, false);
    const health = await fetch(`${service.endpoints.admin}/healthz`);
    assert.equal(health.status, 200);

    proxy.restore();
    await waitFor(async () => (await readyz(service)).status === 200, '/readyz 200', 20_000);
    probe = await readyz(service);
    assert.deepEqual(probe.body, { status: 'ready', replicas: { catalog: 'ready' } });
    assert.equal(service.worker.consuming, true);
    assert.equal(service.replica.size, 3);
    await service.close();
    await service.close(); // idempotent
    assert.equal(service.worker.consuming, false);
  });

  it('does not consume before the replica has synced, then runs the waiting task', async (t) => {
    const gate = deferred<void>();
    const real = catalogSource(db.pool);
    const bus = await testBus();
    const replica = new ReplicatedCache<Character>({
      dataset: catalogDataset,
      bus,
      source: {
        load: async (put) => {
          await gate.promise;
          return real.load(put);
        },
        version: () => real.version(),
      },
      versionCheckIntervalMs: 0,
    });
    const worker = new MatchWorker({ connection: RABBITMQ_URL, redis, replica });
    t.after(async () => {
      gate.resolve();
      await worker.close();
      await replica.close();
      await bus.close();
    });
    const replicaStarted = replica.start();
    const workerStarted = worker.start();
    const task = encodeCeleryTask({ classification: { middle_category: 'metal' } });
    await publishRaw(task.body, task.properties);
    await delay(500);
    assert.equal(worker.consuming, false);
    assert.equal(await messageCount(MATCH_QUEUE), 1, 'the task waits in the queue');
    assert.equal(await redis.get(taskMetaKey(task.id)), null);

    gate.resolve();
    await replicaStarted;
    await workerStarted;
    assert.equal(worker.consuming, true);
    await waitFor(async () => (await redis.get(taskMetaKey(task.id))) !== null, 'the result', 10_000);
    const meta = JSON.parse((await redis.get(taskMetaKey(task.id)))!) as { result: Character };
    assert.deepEqual(meta.result, metal);
    await redis.del(taskMetaKey(task.id));
  });

  it('while Redis is down, holds the task (requeued after a pause) and stores its result once Redis is back', async (t) => {
    const proxy = await TcpProxy.to(REDIS_URL, 6379).start();
    closers.push(() => proxy.close());
    const flaky = createClient({
      url: proxy.urlThrough(REDIS_URL),
      disableOfflineQueue: true,
      socket: { reconnectStrategy: () => 50 },
    });
    flaky.on('error', () => undefined);
    await flaky.connect();
    const worker = await ownWorker(t, flaky);
    t.after(() => {
      if (flaky.isOpen) flaky.destroy();
    });
    proxy.cut();
    const task = encodeCeleryTask({ classification: { middle_category: 'glass' }, userId: 'user-down' });
    await publishRaw(task.body, task.properties);
    await waitFor(() => worker.stats.failed >= 2, 'failed attempts, retried');
    assert.equal(await redis.get(taskMetaKey(task.id)), null);
    assert.equal(worker.stats.success, 0, 'not acked');
    assert.equal(await messageCount(GRANTS_QUEUE), 0, 'no grant before the result');

    proxy.restore();
    await waitFor(() => worker.stats.success === 1, 'the task completed once Redis is back', 10_000);
    const meta = JSON.parse((await redis.get(taskMetaKey(task.id)))!) as {
      status: string;
      result: Character;
    };
    assert.equal(meta.status, 'SUCCESS');
    assert.deepEqual(meta.result, glass);
    assert.equal(await messageCount(GRANTS_QUEUE), 1);
    assert.equal(await messageCount(MATCH_QUEUE), 0);
    await redis.del(taskMetaKey(task.id));
  });

  it('does not ack a task until its grant is confirmed: a refused grant publish is retried, not lost', async (t) => {
    const worker = await ownWorker(t, redis);
    // A grants queue the broker refuses publishes to (and that the worker's declare conflicts with).
    t.after(async () => {
      await amqp.queueDelete({ queue: GRANTS_QUEUE });
      await amqp.queueDeclare({ queue: GRANTS_QUEUE, durable: true });
    });
    await amqp.queueDelete({ queue: GRANTS_QUEUE });
    await amqp.queueDeclare({
      queue: GRANTS_QUEUE,
      durable: true,
      arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' },
    });
    const task = encodeCeleryTask({ classification: { middle_category: 'metal' }, userId: 'user-9' });
    await publishRaw(task.body, task.properties);
    await waitFor(() => worker.stats.failed >= 2, 'grant publish failures, retried', 10_000);
    assert.equal(worker.stats.success, 0, 'the task is not acked');
    // The result was stored first (the caller has its answer); only the grant is pending.
    assert.match((await redis.get(taskMetaKey(task.id)))!, /"status": "SUCCESS"/);

    await amqp.queueDelete({ queue: GRANTS_QUEUE });
    await amqp.queueDeclare({ queue: GRANTS_QUEUE, durable: true });
    await waitFor(() => worker.stats.success === 1, 'the task acked once its grant is confirmed', 15_000);
    const grants = await drain(GRANTS_QUEUE);
    assert.equal(grants.length, 1);
    const grant = (
      Buffer.isBuffer(grants[0]!.body) ? JSON.parse(grants[0]!.body.toString()) : grants[0]!.body
    ) as GrantMessage;
    assert.equal(grant.user_id, 'user-9');
    assert.equal(grant.character_id, metal.id);
    assert.equal(grant.task_id, task.id);
    assert.equal(await messageCount(MATCH_QUEUE), 0);
    await redis.del(taskMetaKey(task.id));
  });
});

describe('match worker: Celery interop', () => {
  let service: MatchWorkerService;

  before(async () => {
    await purgeQueues();
    service = await startService();
    await service.consuming;
    assert.equal(service.worker.consuming, true);
  });
  beforeEach(purgeQueues);

  it('send_task round-trips the matched Character, stored exactly as Celery stores it', async () => {
    // AsyncResult.get() waits on the key's channel: the result must be PUBLISHed too.
    const published = new Map<string, string>();
    const subscriber = redis.duplicate();
    subscriber.on('error', () => undefined);
    await subscriber.connect();
    await subscriber.pSubscribe(`${taskMetaKey('')}*`, (message, channel) => published.set(channel, message));
    const [line] = await celery([
      { major_category: '재활용', middle_category: '플라스틱', minor_category: 'PET' },
    ]);
    assert.ok(line?.ok, JSON.stringify(line));
    assert.deepEqual(line.result, plastic);

    const raw = (await redis.get(taskMetaKey(line.task_id)))!;
    await waitFor(() => published.has(taskMetaKey(line.task_id)), 'the PUBLISH on the key');
    assert.equal(published.get(taskMetaKey(line.task_id)), raw, 'the same JSON stored and published');
    await subscriber.quit();
    const meta = JSON.parse(raw) as Record<string, unknown>;
    assert.deepEqual(Object.keys(meta), [
      'status',
      'result',
      'traceback',
      'children',
      'date_done',
      'task_id',
    ]);
    assert.equal(meta.status, 'SUCCESS');
    assert.equal(meta.traceback, null);
    assert.deepEqual(meta.children, []);
    assert.equal(meta.task_id, line.task_id);
    assert.match(meta.date_done as string, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
    assert.match(raw, /^\{"status": "SUCCESS", "result": \{"id": /, 'Python json.dumps separators');
    assert.ok(raw.includes('\\ud50c\\ub77c\\uc2a4\\ud2f1'), 'non-ASCII escaped as Python does');
    const ttl = await redis.ttl(taskMetaKey(line.task_id));
    assert.ok(ttl > 86_000 && ttl <= 86_400, `TTL ${ttl}`);
  });

  it('no match returns None', async () => {
    const lines = await celery([{ middle_category: 'paper' }, { major_category: 'only major' }, {}]);
    assert.deepEqual(
      lines.map((l) => [l.ok, l.result]),
      [
        [true, null],
        [true, null],
        [true, null],
      ],
    );
  });

  it('an expired task raises TaskRevokedError in Python, and the worker stays up', async () => {
    const [expired] = await celery([{ middle_category: 'metal' }], ['--expires-ago', '30']);
    assert.equal(expired?.ok, false, JSON.stringify(expired));
    assert.equal(expired.error, 'TaskRevokedError');
    assert.equal(expired.module, 'celery.exceptions');
    const meta = JSON.parse((await redis.get(taskMetaKey(expired.task_id)))!) as Record<string, unknown>;
    assert.equal(meta.status, 'REVOKED');
    assert.deepEqual(meta.result, {
      exc_type: 'TaskRevokedError',
      exc_message: ['expired'],
      exc_module: 'celery.exceptions',
    });
    assert.deepEqual(meta.children, []);

    // Celery also gives a past `expires` an AMQP TTL of 0; a task that expired
    // while queued (no TTL) is revoked just the same.
    const queued = encodeCeleryTask({
      classification: { middle_category: 'metal' },
      expires: new Date(Date.now() - 1000),
    });
    await publishRaw(queued.body, queued.properties);
    await waitFor(async () => (await redis.get(taskMetaKey(queued.id))) !== null, 'the revoked result');
    assert.match((await redis.get(taskMetaKey(queued.id)))!, /"status": "REVOKED"/);

    const [after] = await celery([{ middle_category: 'metal' }]);
    assert.deepEqual(after?.result, metal);
    assert.ok(service.worker.stats.expired >= 2);
  });

  it('a task delivered MATCH_DELIVERY_LIMIT times (x-delivery-count) is dead-lettered, not run or requeued again', async () => {
    const spent = encodeCeleryTask({ classification: { middle_category: 'glass' } });
    const last = encodeCeleryTask({ classification: { middle_category: 'glass' } });
    // A quorum queue counts earlier deliveries in x-delivery-count; the default limit is 20.
    const withCount = (t: typeof spent, count: number) => ({
      ...t.properties,
      headers: { ...t.properties.headers, 'x-delivery-count': count },
    });
    await publishRaw(spent.body, withCount(spent, 20));
    await publishRaw(last.body, withCount(last, 19));
    await waitFor(async () => (await redis.get(taskMetaKey(last.id))) !== null, 'the 20th delivery run');
    await waitFor(async () => (await messageCount(MATCH_DLQ)) === 1, 'the 21st dead-lettered');
    const [dead] = await drain(MATCH_DLQ);
    assert.ok(String(dead?.headers?.['x-dlq-reason']).startsWith('TASK_DELIVERY_LIMIT: delivered 21 times'));
    assert.equal(dead?.headers?.id, spent.id);
    assert.equal(await redis.get(taskMetaKey(spent.id)), null, 'not run');
  });

  it('malformed messages land in character.match.dlq with x-dlq-reason; the worker keeps serving', async () => {
    const deadBefore = service.worker.stats.dead_lettered;
    const good = encodeCeleryTask({ classification: { middle_category: 'glass' } });
    const badJson = Buffer.from('[[{"middle_category": "gla');
    const cases: Array<{ body: Buffer; properties: Record<string, unknown>; reason: string }> = [
      // As Celery sends it (content_encoding utf-8: the client hands over bytes).
      {
        body: badJson,
        properties: { ...good.properties, headers: { ...good.properties.headers, id: 'bad-json-1' } },
        reason: 'TASK_BAD_JSON',
      },
      // Without content_encoding (the client tries JSON.parse itself).
      {
        body: badJson,
        properties: {
          contentType: 'application/json',
          headers: { ...good.properties.headers, id: 'bad-json-2' },
        },
        reason: 'TASK_BAD_JSON',
      },
      {
        body: Buffer.from(JSON.stringify([['not a dict'], {}, {}])),
        properties: { ...good.properties, headers: { ...good.properties.headers, id: 'bad-shape-1' } },
        reason: 'TASK_BAD_SHAPE',
      },
      {
        body: Buffer.from(JSON.stringify({ args: [], kwargs: {} })),
        properties: {
          contentType: 'application/json',
          headers: { ...good.properties.headers, id: 'bad-shape-2' },
        },
        reason: 'TASK_BAD_SHAPE',
      },
      {
        body: good.body,
        properties: {
          ...good.properties,
          headers: { ...good.properties.headers, id: 'unknown-1', task: 'character.delete_everything' },
        },
        reason: 'TASK_UNKNOWN',
      },
      // Protocol v1 (no task headers), and a pickle.
      {
        body: Buffer.from('{"task": "x", "id": "y"}'),
        properties: { contentType: 'application/json' },
        reason: 'TASK_BAD_HEADERS',
      },
      {
        body: Buffer.from([0x80, 0x04, 0x95]),
        properties: {
          ...good.properties,
          contentType: 'application/x-python-serialize',
          contentEncoding: 'binary',
          headers: { ...good.properties.headers, id: 'pickle-1' },
        },
        reason: 'TASK_BAD_CONTENT_TYPE',
      },
    ];
    for (const c of cases) await publishRaw(c.body, c.properties);
    await publishRaw(good.body, good.properties);
    await waitFor(
      async () => (await messageCount(MATCH_DLQ)) === cases.length,
      'every bad message dead-lettered',
    );
    await waitFor(async () => (await redis.get(taskMetaKey(good.id))) !== null, 'the good task after them');

    const dead = await drain(MATCH_DLQ);
    assert.equal(dead.length, cases.length);
    // Matched by task id, not by position: four tasks run at once, and one that stores a
    // FAILURE result first can be dead-lettered after one published behind it.
    const idOf = (headers: unknown): string => {
      const id = (headers as { id?: unknown } | undefined)?.id;
      return typeof id === 'string' ? id : 'no id';
    };
    for (const [i, c] of cases.entries()) {
      const msg = dead.find((m) => idOf(m.headers) === idOf(c.properties.headers));
      assert.ok(msg, `case ${i} (${idOf(c.properties.headers)}) dead-lettered`);
      const reason = String(msg.headers?.['x-dlq-reason']);
      assert.ok(reason.startsWith(`${c.reason}: `), `case ${i}: ${reason}`);
      assert.equal(msg.headers?.['x-dlq-original-queue'], MATCH_QUEUE);
      assert.equal(msg.durable, true);
      assert.equal(msg.contentType, c.properties.contentType);
      const bytes = Buffer.isBuffer(msg.body) ? msg.body : Buffer.from(JSON.stringify(msg.body));
      if (Buffer.isBuffer(msg.body)) assert.deepEqual(bytes, c.body, `case ${i}: original body`);
      else assert.deepEqual(msg.body, JSON.parse(c.body.toString()), `case ${i}: original body`);
      if (c.properties.headers) {
        const original = c.properties.headers as Record<string, unknown>;
        assert.equal(msg.headers?.id, original.id, `case ${i}: original headers kept`);
        assert.equal(msg.headers?.task, original.task);
      }
    }
    // A task with a readable id but wrong arguments also fails for its caller.
    const failed = JSON.parse((await redis.get(taskMetaKey('bad-shape-1')))!) as Record<string, unknown>;
    assert.equal(failed.status, 'FAILURE');
    assert.deepEqual(Object.keys(failed.result as object), ['exc_type', 'exc_message', 'exc_module']);
    assert.equal(await redis.get(taskMetaKey('unknown-1')), null);

    // ... and a Python caller sees it raised.
    const [pyBad] = await celery(['not a dict']);
    assert.equal(pyBad?.ok, false);
    assert.equal(pyBad.error, 'ValueError');
    assert.match(pyBad.message ?? '', /classification must be a dict/);
    const [pyGood] = await celery([{ middle_category: 'glass' }]);
    assert.deepEqual(pyGood?.result, glass);
    assert.equal(service.worker.stats.dead_lettered - deadBefore, cases.length + 1);
    await redis.del(['bad-json-1', 'bad-json-2', 'bad-shape-1', 'bad-shape-2'].map(taskMetaKey));
  });

  it('a task with user_id publishes exactly one GrantMessage to character.grants', async () => {
    const before = service.worker.stats;
    const [matched] = await celery([{ middle_category: 'glass' }], ['--user-id', 'user-7']);
    const [numeric] = await celery([{ middle_category: 'metal' }], ['--user-id', '42']);
    const [unmatched] = await celery([{ middle_category: 'paper' }], ['--user-id', 'user-7']);
    const [anonymous] = await celery([{ middle_category: 'glass' }]);
    for (const line of [matched, numeric, unmatched, anonymous]) assert.ok(line?.ok, JSON.stringify(line));
    // The grant is confirmed before the ack, which may follow the stored result.
    await waitFor(() => {
      const s = service.worker.stats;
      return s.in_flight === 0 && s.success + s.no_match === before.success + before.no_match + 4;
    }, 'the four tasks acked');
    await delay(200);
    const grants = (await drain(GRANTS_QUEUE)).map((m) => {
      assert.equal(m.durable, true, 'persistent');
      assert.equal(m.contentType, 'application/json');
      const body: unknown = Buffer.isBuffer(m.body) ? JSON.parse(m.body.toString()) : m.body;
      return body as GrantMessage;
    });
    assert.equal(grants.length, 2, JSON.stringify(grants));
    const [g1, g2] = grants;
    assert.deepEqual(
      { ...g1, granted_at: undefined },
      {
        user_id: 'user-7',
        character_id: glass.id,
        character_code: glass.code,
        task_id: matched!.task_id,
        granted_at: undefined,
      },
    );
    assert.ok(Math.abs(Date.parse(g1!.granted_at) - Date.now()) < 60_000);
    assert.equal(g2?.user_id, '42', 'a numeric user_id is stringified');
    assert.equal(g2?.character_id, metal.id);
    assert.equal(g2?.task_id, numeric!.task_id);
  });

  it('a task whose user_id PostgreSQL cannot store (a NUL) is dead-lettered with its reason, and grants nothing', async () => {
    const before = service.worker.stats;
    const poison = encodeCeleryTask({
      classification: { middle_category: 'glass' },
      userId: 'nul\u0000user',
    });
    const good = encodeCeleryTask({ classification: { middle_category: 'glass' }, userId: 'fine-user' });
    await publishRaw(poison.body, poison.properties);
    await publishRaw(good.body, good.properties);
    await waitFor(() => {
      const s = service.worker.stats;
      return (
        s.in_flight === 0 && s.dead_lettered === before.dead_lettered + 1 && s.success === before.success + 1
      );
    }, 'the poison dead-lettered, the good task run');
    const [dead] = await drain(MATCH_DLQ);
    assert.equal(
      dead?.headers?.['x-dlq-reason'],
      'TASK_BAD_SHAPE: kwargs.user_id holds a NUL character, which PostgreSQL cannot store',
    );
    assert.equal(dead?.headers?.id, poison.id);
    // Its caller's get() raises instead of waiting.
    const failed = JSON.parse((await redis.get(taskMetaKey(poison.id)))!) as { status: string };
    assert.equal(failed.status, 'FAILURE');
    // Only the good task's grant reaches the grants writer.
    const grants = (await drain(GRANTS_QUEUE)).map(
      (m) => JSON.parse(Buffer.isBuffer(m.body) ? m.body.toString() : JSON.stringify(m.body)) as GrantMessage,
    );
    assert.deepEqual(
      grants.map((g) => g.user_id),
      ['fine-user'],
    );
    await redis.del([poison.id, good.id].map(taskMetaKey));
  });

  it('counts outcomes and latencies on /metrics', async () => {
    const res = await fetch(`${service.endpoints.admin}/metrics`);
    const text = await res.text();
    const count = (outcome: string): number =>
      Number(new RegExp(`cachecast_match_tasks_total\\{outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1]);
    const s = service.worker.stats;
    for (const outcome of ['success', 'no_match', 'expired', 'dead_lettered', 'failed'] as const)
      assert.equal(count(outcome), s[outcome], outcome);
    assert.ok(s.success > 0 && s.no_match > 0 && s.expired > 0 && s.dead_lettered > 0);
    assert.match(text, /cachecast_match_task_duration_seconds_bucket\{le="0.005",outcome="success"\} \d+/);
    assert.match(text, /cachecast_replica_size\{dataset="catalog"\} 3/);
  });
});

describe('match worker: Celery message and result formats (no I/O)', () => {
  const headers = (extra: Record<string, unknown> = {}) => ({
    lang: 'py',
    task: 'character.match_reward',
    id: 'task-1',
    expires: null,
    ignore_result: false,
    ...extra,
  });
  const body = (args: unknown[], kwargs: Record<string, unknown> = {}) => [
    args,
    kwargs,
    { callbacks: null, errbacks: null, chain: null, chord: null },
  ];

  it('reads a task from bytes (content_encoding utf-8) and from an already parsed body', () => {
    const bytes = Buffer.from(JSON.stringify(body([{ middle_category: '플라스틱' }], { user_id: 42 })));
    const fromBytes = parseCeleryTask({
      body: bytes,
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      headers: headers(),
    });
    const fromObject = parseCeleryTask({
      body: body([{ middle_category: '플라스틱' }], { user_id: 42 }),
      contentType: 'application/json',
      headers: headers(),
    });
    for (const parsed of [fromBytes, fromObject]) {
      assert.ok(parsed.ok);
      assert.deepEqual(parsed.task, {
        id: 'task-1',
        name: 'character.match_reward',
        classification: { middle_category: '플라스틱' },
        userId: '42',
        expiresAt: undefined,
        ignoreResult: false,
      });
    }
  });

  it('reads expires as Celery writes it (with an offset, naive = UTC, microseconds)', () => {
    const at = (expires: string) => {
      const parsed = parseCeleryTask({
        body: body([{}]),
        contentType: 'application/json',
        headers: headers({ expires }),
      });
      assert.ok(parsed.ok, expires);
      return parsed.task.expiresAt;
    };
    assert.equal(at('2026-11-22T07:57:17.059641+00:00'), Date.UTC(2026, 10, 22, 7, 57, 17, 59));
    assert.equal(at('2026-11-22T07:57:17.059641'), Date.UTC(2026, 10, 22, 7, 57, 17, 59));
    assert.equal(at('2026-11-22T16:57:17+09:00'), Date.UTC(2026, 10, 22, 7, 57, 17));
    assert.equal(at('2026-11-22T07:57:17.290Z'), Date.UTC(2026, 10, 22, 7, 57, 17, 290));
  });

  it('refuses what it cannot run with a stable code', () => {
    const code = (message: Parameters<typeof parseCeleryTask>[0]) => {
      const parsed = parseCeleryTask(message);
      assert.equal(parsed.ok, false);
      return parsed.ok ? undefined : parsed.error.code;
    };
    const json = 'application/json';
    assert.equal(
      code({ body: Buffer.from('[[{'), contentType: json, contentEncoding: 'utf-8', headers: headers() }),
      'TASK_BAD_JSON',
    );
    assert.equal(
      code({
        body: Buffer.from([0xff, 0xfe]),
        contentType: json,
        contentEncoding: 'utf-8',
        headers: headers(),
      }),
      'TASK_BAD_ENCODING',
    );
    assert.equal(
      code({ body: Buffer.from('x'), contentType: json, contentEncoding: 'binary', headers: headers() }),
      'TASK_BAD_ENCODING',
    );
    assert.equal(
      code({ body: body([{}]), contentType: 'application/x-python-serialize', headers: headers() }),
      'TASK_BAD_CONTENT_TYPE',
    );
    assert.equal(code({ body: body([{}]), contentType: json, headers: {} }), 'TASK_BAD_HEADERS');
    assert.equal(
      code({ body: body([{}]), contentType: json, headers: headers({ expires: 'tomorrow' }) }),
      'TASK_BAD_HEADERS',
    );
    assert.equal(
      code({ body: body([{}]), contentType: json, headers: headers({ task: 'other.task' }) }),
      'TASK_UNKNOWN',
    );
    assert.equal(code({ body: { args: [] }, contentType: json, headers: headers() }), 'TASK_BAD_SHAPE');
    assert.equal(code({ body: body([]), contentType: json, headers: headers() }), 'TASK_BAD_SHAPE');
    assert.equal(code({ body: body([{}, {}]), contentType: json, headers: headers() }), 'TASK_BAD_SHAPE');
    assert.equal(code({ body: body(['plastic']), contentType: json, headers: headers() }), 'TASK_BAD_SHAPE');
    assert.equal(
      code({ body: body([{ middle_category: 7 }]), contentType: json, headers: headers() }),
      'TASK_BAD_SHAPE',
    );
    assert.equal(
      code({ body: body([{}], { user_id: { id: 1 } }), contentType: json, headers: headers() }),
      'TASK_BAD_SHAPE',
    );
    // A lone surrogate, as JSON carries it ("\ud800"): no UTF-8 form, no cache key.
    const lone = parseCeleryTask({
      body: Buffer.from(JSON.stringify(body([{}], { user_id: 'u\ud800' }))),
      contentType: json,
      contentEncoding: 'utf-8',
      headers: headers(),
    });
    assert.ok(!lone.ok && lone.error.code === 'TASK_BAD_SHAPE' && /surrogate/.test(lone.error.message));
    assert.ok(
      parseCeleryTask({
        body: body([{}], { user_id: 'u\ud83d\ude00' }),
        contentType: json,
        headers: headers(),
      }).ok,
    );
    assert.equal(
      code({
        body: Buffer.alloc(2 * 1024 * 1024, 0x20),
        contentType: json,
        contentEncoding: 'utf-8',
        headers: headers(),
      }),
      'TASK_TOO_LARGE',
    );
    const unknown = parseCeleryTask({ body: body([{}]), contentType: json, headers: headers({ task: 'x' }) });
    assert.ok(!unknown.ok && unknown.error.taskId === 'task-1' && unknown.error.taskName === 'x');
  });

  it("writes results as Python's json.dumps, in Celery's key order", () => {
    const now = Date.UTC(2026, 0, 2, 3, 4, 5, 67);
    assert.equal(celeryDateDone(now), '2026-01-02T03:04:05.067000');
    assert.equal(
      pythonJson(successMeta('t', { name: 'Gläs 🥤', n: 1, ok: true, none: null }, now)),
      '{"status": "SUCCESS", "result": {"name": "Gl\\u00e4s \\ud83e\\udd64", "n": 1, "ok": true, "none": null}, ' +
        '"traceback": null, "children": [], "date_done": "2026-01-02T03:04:05.067000", "task_id": "t"}',
    );
    assert.equal(
      pythonJson(revokedMeta('t', now)),
      '{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["expired"], ' +
        '"exc_module": "celery.exceptions"}, "traceback": null, "children": [], ' +
        '"date_done": "2026-01-02T03:04:05.067000", "task_id": "t"}',
    );
  });
});
