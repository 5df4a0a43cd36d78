// The match worker's body limit, checked on the raw bytes before any parsing
// (issue 11, item 8): rabbitmq-client parsed an application/json body without
// a content encoding before the worker could refuse it. Its own file, so the
// process's peak memory is this test's alone.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Connection } from 'rabbitmq-client';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import type { RawMessage } from '../../src/amqp/raw-consumer.ts';
import { createRawBodyConsumer } from '../../src/amqp/raw-consumer.ts';
import { encodeCeleryTask } from '../../src/celery/protocol.ts';
import { taskMetaKey } from '../../src/celery/result-backend.ts';
import { MATCH_DLQ, MATCH_QUEUE, MatchWorker } from '../../src/services/match-worker/worker.ts';
import type { RedisClient } from '../../src/redis/client.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { deferred } from '../../src/util/deferred.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import type { TestDatabase } from '../support/env.ts';
import { RABBITMQ_URL, redisClient, testDatabase } from '../support/env.ts';
import { testBus } from '../support/rabbit.ts';
import { waitFor } from '../support/wait.ts';

const glass: Character = {
  id: randomUUID(),
  code: 'bottle',
  name: 'Bottle',
  match_label: 'glass',
  type_label: 'type',
  dialog: 'hi',
  is_default: false,
};
let db: TestDatabase;
let redis: RedisClient;
let amqp: Connection;
const closers: Array<() => Promise<void>> = [];

before(async () => {
  db = await testDatabase();
  await upsertCharacter(db.pool, glass, 'unused.topic');
  redis = await redisClient();
  amqp = new Connection(RABBITMQ_URL);
  amqp.on('error', () => undefined);
  await amqp.exchangeDeclare({ exchange: MATCH_QUEUE, type: 'direct', durable: true });
  for (const queue of [MATCH_QUEUE, MATCH_DLQ, GRANTS_QUEUE]) {
    await amqp.queueDeclare({ queue, durable: true });
    await amqp.queuePurge({ queue });
  }
  await amqp.queueBind({ exchange: MATCH_QUEUE, queue: MATCH_QUEUE, routingKey: MATCH_QUEUE });
});
after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const queue of [MATCH_QUEUE, MATCH_DLQ, GRANTS_QUEUE]) await amqp.queuePurge({ queue });
  await amqp.close();
  await redis.quit();
  await db.drop();
});

async function startWorker(): Promise<MatchWorker> {
  const bus = await testBus();
  const replica = new ReplicatedCache<Character>({
    dataset: catalogDataset,
    bus,
    source: catalogSource(db.pool),
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  const worker = new MatchWorker({ connection: RABBITMQ_URL, redis, replica });
  closers.push(async () => {
    await worker.close();
    await replica.close();
    await bus.close();
  });
  await worker.start();
  return worker;
}

/** The one message in `queue`, body as the bytes the broker holds (never parsed here either). */
async function takeRaw(queue: string): Promise<RawMessage> {
  const got = deferred<RawMessage>();
  const consumer = createRawBodyConsumer(amqp, { queue, queueOptions: { durable: true } }, (msg) => {
    got.resolve(msg);
  });
  try {
    return await got.promise;
  } finally {
    await consumer.close();
  }
}

const rssBytes = (): number => process.resourceUsage().maxRSS * 1024;

describe('match worker: body size limit', () => {
  it('dead-letters a 16 MiB application/json task unparsed (TASK_TOO_LARGE), with flat memory, and keeps serving', async () => {
    const worker = await startWorker();
    const task = encodeCeleryTask({ classification: { middle_category: 'glass' }, userId: 'big-user' });
    // A task of the right shape, padded in kwargs with 5.6 million empty objects: parsed,
    // several hundred MiB; run, a success. No content_encoding: the client's own parse case.
    const pad = '{},'.repeat((16 * 1024 * 1024) / 3);
    const body = Buffer.from(
      `[[{"middle_category": "glass"}], {"user_id": "big-user", "pad": [${pad}{}]}, {"callbacks": null}]`,
    );
    const properties = { ...task.properties, contentEncoding: undefined };
    const publisher = amqp.createPublisher({ confirm: true });
    closers.push(() => publisher.close());

    const before = rssBytes();
    await publisher.send({ exchange: '', routingKey: MATCH_QUEUE, ...properties }, body);
    await waitFor(
      () => worker.stats.dead_lettered + worker.stats.success === 1,
      'the task handled',
      30_000,
      20,
    );
    const grown = rssBytes() - before;
    // Its raw bytes pass through a few buffers (received, republished): about 20 MiB here.
    // Parsed (as before the fix), the process's peak grew by about 490 MiB.
    assert.ok(grown < 160 * 1024 * 1024, `peak memory grew by ${Math.round(grown / 2 ** 20)} MiB`);
    assert.equal(worker.stats.dead_lettered, 1, 'dead-lettered, not run');
    assert.equal(worker.stats.success, 0);
    // Dead-lettered once the broker confirmed it, so it is there.
    assert.equal((await amqp.queueDeclare({ queue: MATCH_DLQ, passive: true })).messageCount, 1);

    const dead = await takeRaw(MATCH_DLQ);
    assert.equal(
      dead.headers?.['x-dlq-reason'],
      `TASK_TOO_LARGE: body is ${body.length} bytes, more than 1048576`,
    );
    assert.equal(dead.contentType, 'application/json');
    assert.equal(dead.contentEncoding, undefined, 'properties as sent');
    assert.equal(dead.headers?.id, task.id);
    assert.ok(dead.body.equals(body), 'the body as it was sent');
    assert.equal(
      (await amqp.queueDeclare({ queue: GRANTS_QUEUE, passive: true })).messageCount,
      0,
      'no grant',
    );

    // A task within the limit, sent the same way, still runs.
    const small = encodeCeleryTask({ classification: { middle_category: 'glass' } });
    await publisher.send(
      { exchange: '', routingKey: MATCH_QUEUE, ...small.properties, contentEncoding: undefined },
      small.body,
    );
    await waitFor(async () => (await redis.get(taskMetaKey(small.id))) !== null, 'the small task run');
    assert.match((await redis.get(taskMetaKey(small.id)))!, /"status": "SUCCESS"/);
    await redis.del([taskMetaKey(small.id), taskMetaKey(task.id)]);
  });
});
