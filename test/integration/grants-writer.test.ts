import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Connection } from 'rabbitmq-client';
import { grantId } from '../../src/catalog/grant-id.ts';
import type { GrantMessage } from '../../src/catalog/grant.ts';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import { GRANTS_DLQ, GrantsWriter } from '../../src/services/catalog/grants-writer.ts';
import type { TestDatabase } from '../support/env.ts';
import { RABBITMQ_URL, testDatabase } from '../support/env.ts';
import { waitFor } from '../support/wait.ts';

let db: TestDatabase;
let amqp: Connection;

before(async () => {
  db = await testDatabase();
  amqp = new Connection(RABBITMQ_URL);
  // Leftovers from other runs must not count here.
  for (const queue of [GRANTS_QUEUE, GRANTS_DLQ]) {
    await amqp.queueDeclare({ queue, durable: true });
    await amqp.queuePurge(queue);
  }
});
after(async () => {
  await amqp.close();
  await db.drop();
});

function grant(user: string, character: string): GrantMessage {
  return {
    user_id: user,
    character_id: character,
    character_code: 'c',
    task_id: randomUUID(),
    granted_at: new Date().toISOString(),
  };
}

describe('grants writer', () => {
  it('writes each (user, character) once however often it is delivered, and dead-letters malformed grants', async () => {
    const committed: string[][] = [];
    const writer = new GrantsWriter({
      connection: amqp,
      pool: db.pool,
      batchSize: 50,
      onCommitted: (users) => void committed.push(users),
    });
    const publisher = amqp.createPublisher({ confirm: true });
    const characters = [randomUUID(), randomUUID(), randomUUID()];
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    let sent = 0;
    for (const user of users) {
      for (const character of characters) {
        // Every grant twice: a task redelivered after a crash publishes it again.
        for (let copy = 0; copy < 2; copy++) {
          await publisher.send(
            { routingKey: GRANTS_QUEUE, durable: true, contentType: 'application/json' },
            grant(user, character),
          );
          sent++;
        }
      }
    }
    await publisher.send({ routingKey: GRANTS_QUEUE, durable: true }, Buffer.from('{"user_id": 5}'));
    await publisher.send({ routingKey: GRANTS_QUEUE, durable: true }, Buffer.from('not json'));
    // Started once the queue holds everything: batching is then up to the writer, not to how
    // fast one-by-one confirmed publishes trickle in on a slow disk.
    await writer.start();
    await waitFor(
      () => writer.stats.written + writer.stats.duplicates === sent && writer.stats.dead_lettered === 2,
      'all grants handled',
      15_000,
    );
    const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM character_grants');
    assert.equal(rows[0]!.n, users.length * characters.length);
    assert.equal(writer.stats.written, 120);
    assert.equal(writer.stats.duplicates, 120);
    assert.ok(
      writer.stats.batches < sent / 2,
      `batched: ${writer.stats.batches} transactions for ${sent} grants`,
    );
    const { rows: one } = await db.pool.query<{ id: string }>(
      'SELECT id FROM character_grants WHERE user_id = $1 AND character_id = $2',
      ['user-7', characters[1]],
    );
    assert.equal(one[0]!.id, grantId('user-7', characters[1]!));
    assert.ok(committed.flat().includes('user-7'));
    const dlq = await amqp.basicGet({ queue: GRANTS_DLQ, noAck: true });
    assert.match(String(dlq?.headers?.['x-dlq-reason']), /^GRANT_BAD_SHAPE/);
    await publisher.close();
    await writer.close();
    await writer.close();
  });

  it('dead-letters a grant whose user_id holds a lone surrogate, and writes the rest of its batch', async () => {
    await amqp.queuePurge(GRANTS_DLQ);
    const committed: string[][] = [];
    const writer = new GrantsWriter({
      connection: amqp,
      pool: db.pool,
      onCommitted: (users) => void committed.push(users),
    });
    await writer.start();
    const publisher = amqp.createPublisher({ confirm: true });
    const character = randomUUID();
    // JSON carries it as the escape "\ud800": valid JSON, valid UTF-8 bytes, but no UTF-8 form once parsed.
    const bad = Buffer.from(JSON.stringify(grant('lone\ud800', character)));
    assert.match(bad.toString(), /"lone\\ud800"/);
    await publisher.send({ routingKey: GRANTS_QUEUE, durable: true }, bad);
    await publisher.send(
      { routingKey: GRANTS_QUEUE, durable: true, contentType: 'application/json' },
      grant('fine-user', character),
    );
    await waitFor(
      () => writer.stats.dead_lettered === 1 && writer.stats.written === 1,
      'one dead-lettered, one written',
      15_000,
    );
    const dlq = await amqp.basicGet({ queue: GRANTS_DLQ, noAck: true });
    assert.match(String(dlq?.headers?.['x-dlq-reason']), /^GRANT_BAD_SHAPE: .*surrogate/);
    assert.equal(String(dlq?.body), bad.toString(), 'the message as it was sent');
    const { rows } = await db.pool.query<{ user_id: string }>(
      'SELECT user_id FROM character_grants WHERE character_id = $1',
      [character],
    );
    assert.deepEqual(
      rows.map((r) => r.user_id),
      ['fine-user'],
      'not stored as "lone\ufffd" either',
    );
    assert.deepEqual(committed, [['fine-user']]);
    await publisher.close();
    await writer.close();
  });

  it('dead-letters grants PostgreSQL cannot store (a NUL user_id, a year-0 granted_at) and writes the rest of their batch', async (t) => {
    await amqp.queuePurge(GRANTS_DLQ);
    const writer = new GrantsWriter({ connection: amqp, pool: db.pool, batchSize: 50 });
    t.after(() => writer.close());
    const publisher = amqp.createPublisher({ confirm: true });
    t.after(() => publisher.close());
    const character = randomUUID();
    const good = Array.from({ length: 20 }, (_, i) => grant(`edge-good-${i}`, character));
    // An offset PostgreSQL refuses (past ±15:59) names a valid instant all the same: stored as UTC.
    good.push({ ...grant('far-offset', character), granted_at: '2026-01-01T00:00:00+23:59' });
    const poison = [
      grant('nul\u0000user', character),
      { ...grant('year-zero', character), granted_at: '0000-01-01T00:00:00Z' },
    ];
    // Poison in the middle of one batch: the writer starts once all are queued.
    for (const g of [...good.slice(0, 10), ...poison, ...good.slice(10)]) {
      await publisher.send({ routingKey: GRANTS_QUEUE, durable: true }, Buffer.from(JSON.stringify(g)));
    }
    await writer.start();
    await waitFor(
      () => writer.stats.written === good.length && writer.stats.dead_lettered === poison.length,
      'the good grants written, the poison dead-lettered',
      15_000,
    );
    const reasons: string[] = [];
    for (;;) {
      const msg = await amqp.basicGet({ queue: GRANTS_DLQ, noAck: true });
      if (!msg) break;
      reasons.push(String(msg.headers?.['x-dlq-reason']));
    }
    assert.deepEqual(reasons.sort(), [
      'GRANT_BAD_SHAPE: granted_at is outside the years 1 to 9999 (UTC)',
      'GRANT_BAD_SHAPE: user_id holds a NUL character, which PostgreSQL cannot store',
    ]);
    const { rows } = await db.pool.query<{ user_id: string; acquired_at: Date }>(
      'SELECT user_id, acquired_at FROM character_grants WHERE character_id = $1 ORDER BY user_id',
      [character],
    );
    assert.deepEqual(rows.map((r) => r.user_id).sort(), good.map((g) => g.user_id).sort());
    const farOffset = rows.find((r) => r.user_id === 'far-offset');
    assert.equal(farOffset?.acquired_at.toISOString(), '2025-12-31T00:01:00.000Z');
    assert.equal(writer.stats.failures, 0, 'no batch requeued');
    await publisher.close();
    await writer.close();
    assert.equal((await amqp.queueDeclare({ queue: GRANTS_QUEUE, passive: true })).messageCount, 0);
  });

  it('splits a batch the database refuses to dead-letter only the row it refuses, and writes the others', async (t) => {
    await amqp.queuePurge(GRANTS_DLQ);
    // A rule no validator knows of, standing for any row the database refuses.
    await db.pool.query(
      `ALTER TABLE character_grants ADD CONSTRAINT refuse_poison CHECK (user_id <> 'poison-user')`,
    );
    try {
      const writer = new GrantsWriter({ connection: amqp, pool: db.pool, batchSize: 50 });
      t.after(() => writer.close());
      const publisher = amqp.createPublisher({ confirm: true });
      t.after(() => publisher.close());
      const character = randomUUID();
      const good = Array.from({ length: 30 }, (_, i) => grant(`split-good-${i}`, character));
      const poison = grant('poison-user', character);
      for (const g of [...good.slice(0, 17), poison, ...good.slice(17)]) {
        await publisher.send({ routingKey: GRANTS_QUEUE, durable: true }, Buffer.from(JSON.stringify(g)));
      }
      await writer.start();
      await waitFor(
        () => writer.stats.written === good.length && writer.stats.dead_lettered === 1,
        'the good grants written, the refused one dead-lettered',
        15_000,
      );
      const dead = await amqp.basicGet({ queue: GRANTS_DLQ, noAck: true });
      assert.match(
        String(dead?.headers?.['x-dlq-reason']),
        /^GRANT_REFUSED_BY_DATABASE: 23514 .*refuse_poison/,
      );
      assert.deepEqual(JSON.parse(String(dead?.body)), poison, 'the message as it was sent');
      const { rows } = await db.pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM character_grants WHERE character_id = $1',
        [character],
      );
      assert.equal(rows[0]!.n, good.length);
      assert.equal(writer.stats.refused, 1);
      assert.ok(writer.stats.splits >= 1);
      assert.equal(writer.stats.failures, 0, 'no batch requeued');
      await publisher.close();
      await writer.close();
      // Nothing left unacknowledged either: the consumer's close would have requeued it.
      assert.equal((await amqp.queueDeclare({ queue: GRANTS_QUEUE, passive: true })).messageCount, 0);
    } finally {
      await db.pool.query('ALTER TABLE character_grants DROP CONSTRAINT refuse_poison');
    }
  });

  it('dead-letters an oversized grant unparsed (GRANT_TOO_LARGE)', async (t) => {
    await amqp.queuePurge(GRANTS_DLQ);
    const writer = new GrantsWriter({ connection: amqp, pool: db.pool });
    t.after(() => writer.close());
    const publisher = amqp.createPublisher({ confirm: true });
    t.after(() => publisher.close());
    await writer.start();
    const character = randomUUID();
    // A grant of the right shape, padded past 64 KiB; application/json without an encoding, which
    // rabbitmq-client would parse before the writer could look at its size.
    const big = { ...grant('big-user', character), pad: 'x'.repeat(100_000) };
    await publisher.send({ routingKey: GRANTS_QUEUE, durable: true, contentType: 'application/json' }, big);
    await waitFor(() => writer.stats.dead_lettered === 1, 'the oversized grant dead-lettered');
    const dead = await amqp.basicGet({ queue: GRANTS_DLQ, noAck: true });
    assert.match(
      String(dead?.headers?.['x-dlq-reason']),
      /^GRANT_TOO_LARGE: body is \d+ bytes, more than 65536$/,
    );
    const { rows } = await db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM character_grants WHERE character_id = $1',
      [character],
    );
    assert.equal(rows[0]!.n, 0);
  });

  it('derives stable, distinct grant ids', () => {
    assert.equal(grantId('u', 'c'), grantId('u', 'c'));
    assert.notEqual(grantId('u', 'c'), grantId('u', 'd'));
    assert.notEqual(grantId('uc', ''), grantId('u', 'c'));
    assert.match(grantId('u', 'c'), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
