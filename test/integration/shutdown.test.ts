// SIGTERM right after traffic, for every service as `cachecast serve` runs it:
// each drains and exits 0 within a few seconds, round after round (issue 11,
// item 9: the catalog once stayed up until the stack SIGKILLed it 15 s later).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Connection } from 'rabbitmq-client';
import type { Publisher } from 'rabbitmq-client';
import { GRANTS_QUEUE } from '../../src/catalog/grant.ts';
import { encodeCeleryTask } from '../../src/celery/protocol.ts';
import { MATCH_QUEUE } from '../../src/services/match-worker/worker.ts';
import { serviceEnv } from '../support/authz-fleet.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, RABBITMQ_URL, testDatabase } from '../support/env.ts';
import { claims, hs256 } from '../support/jwt-tokens.ts';
import type { ServiceProcess } from '../support/service-process.ts';
import { startServiceProcess } from '../support/service-process.ts';
import { waitFor } from '../support/wait.ts';

const ROUNDS = 5;
/** "Within a few seconds": well under the stack's 15 s before SIGKILL and any keep-alive timeout. */
const EXIT_WITHIN_MS = 10_000;
const ADMIN_TOKEN = 'shutdown-test-admin-token-0123456789';
const SERVICES = ['auth', 'ext-authz', 'catalog', 'match-worker'] as const;

let db: TestDatabase;
let amqp: Connection;
let publisher: Publisher;
const running: ServiceProcess[] = [];

before(async () => {
  db = await testDatabase();
  amqp = new Connection(RABBITMQ_URL);
  publisher = amqp.createPublisher({ confirm: true });
  for (const queue of [GRANTS_QUEUE, MATCH_QUEUE]) {
    await amqp.queueDeclare({ queue, durable: true });
    await amqp.queuePurge(queue);
  }
});
after(async () => {
  for (const p of running) p.kill();
  await publisher.close();
  await amqp.close();
  await db.drop();
});

function databaseUrl(): string {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  return url.toString();
}

const bearer = (sub: string) => ({ authorization: `Bearer ${hs256(claims({ sub }))}` });

/** Many requests at once, over the client's keep-alive connections; failures (refused while closing) are fine. */
function burst(count: number, request: (i: number) => Promise<unknown>): Promise<unknown>[] {
  return Array.from({ length: count }, (_, i) => request(i).catch(() => undefined));
}

async function text(res: Promise<Response>): Promise<number> {
  const r = await res;
  await r.arrayBuffer();
  return r.status;
}

/** Starts traffic at every service; resolves once each has answered some of it (the rest is in flight). */
async function traffic(services: Record<(typeof SERVICES)[number], ServiceProcess>, round: number) {
  const answered: Record<string, number> = {};
  const counted = (name: string) => (p: Promise<unknown>) =>
    p.then((v) => {
      answered[name] = (answered[name] ?? 0) + 1;
      return v;
    });
  const auth = services.auth.endpoints.http!;
  const authz = services['ext-authz'].endpoints.http!;
  const catalog = services.catalog.endpoints.http!;
  const workerAdmin = services['match-worker'].endpoints.admin!;
  const label = `shutdown-label-${round}`;
  const inFlight = [
    ...burst(100, (i) =>
      counted('auth')(
        text(
          fetch(`${auth}/api/v1/auth/${i % 2 ? 'login' : 'logout'}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...bearer(`u-${i}`) },
            body: JSON.stringify({ user_id: `u-${i}` }),
          }),
        ),
      ),
    ),
    ...burst(200, (i) => counted('ext-authz')(text(fetch(`${authz}/check`, { headers: bearer(`u-${i}`) })))),
    ...burst(100, () => counted('catalog')(text(fetch(`${catalog}/api/v1/characters/catalog`)))),
    // Collection reads: misses that write back to Redis in the background.
    ...burst(100, (i) =>
      counted('catalog')(
        text(
          fetch(`${catalog}/api/v1/users/r${round}-u${i}/characters`, { headers: bearer(`r${round}-u${i}`) }),
        ),
      ),
    ),
    // Admin writes: each commits an outbox event the relay publishes.
    ...burst(20, (i) =>
      counted('catalog')(
        text(
          fetch(`${catalog}/admin/characters/shutdown-${round}-${i}`, {
            method: 'PUT',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
            body: JSON.stringify({ name: 'Shutdown', match_label: label }),
          }),
        ),
      ),
    ),
    ...burst(50, () => counted('match-worker')(text(fetch(`${workerAdmin}/worker`)))),
    // Grants straight to the catalog's writer, and match tasks whose grants reach it too.
    ...burst(100, (i) =>
      publisher.send(
        { routingKey: GRANTS_QUEUE, durable: true, contentType: 'application/json' },
        {
          user_id: `r${round}-u${i}`,
          character_id: randomUUID(),
          character_code: 'c',
          task_id: randomUUID(),
          granted_at: new Date().toISOString(),
        },
      ),
    ),
    ...burst(100, (i) => {
      const task = encodeCeleryTask({
        classification: { middle_category: label },
        userId: `r${round}-u${i}`,
      });
      return publisher.send({ routingKey: MATCH_QUEUE, ...task.properties }, task.body);
    }),
  ];
  await waitFor(
    () => SERVICES.every((name) => (answered[name] ?? 0) >= 10),
    'every service answering',
    20_000,
    5,
  );
  return inFlight;
}

describe('shutdown', () => {
  it(`every service exits 0 within a few seconds of a SIGTERM right after traffic, ${ROUNDS} rounds in a row`, async () => {
    const env = serviceEnv({ DATABASE_URL: databaseUrl(), ADMIN_TOKEN, LOG_LEVEL: 'warn' });
    for (let round = 0; round < ROUNDS; round++) {
      const started = await Promise.all(SERVICES.map((name) => startServiceProcess(name, env)));
      running.push(...started);
      const services = Object.fromEntries(started.map((p) => [p.name, p])) as Record<
        (typeof SERVICES)[number],
        ServiceProcess
      >;
      for (const p of started) {
        await waitFor(
          async () => (await fetch(`${p.endpoints.admin}/readyz`).catch(() => undefined))?.status === 200,
          `${p.name} ready`,
          30_000,
          50,
        );
      }
      const inFlight = await traffic(services, round);
      for (const p of started) p.child.kill('SIGTERM');
      for (const p of started) {
        let timer: NodeJS.Timeout | undefined;
        const exit = await Promise.race([
          p.exited,
          new Promise<'still running'>((resolve) => {
            timer = setTimeout(() => resolve('still running'), EXIT_WITHIN_MS);
          }),
        ]).finally(() => clearTimeout(timer));
        assert.deepEqual(
          exit,
          { code: 0, signal: null },
          `round ${round}: ${p.name} after SIGTERM\n${p.output().slice(-3000)}`,
        );
      }
      await Promise.all(inFlight);
    }
  });
});
