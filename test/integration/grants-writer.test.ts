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

  it('derives stable, distinct grant ids', () => {
    assert.equal(grantId('u', 'c'), grantId('u', 'c'));
    assert.notEqual(grantId('u', 'c'), grantId('u', 'd'));
    assert.notEqual(grantId('uc', ''), grantId('u', 'c'));
    assert.match(grantId('u', 'c'), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
