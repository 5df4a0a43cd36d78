import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { RabbitMQBus } from '../../src/amqp/rabbitmq-bus.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { silentLogger } from '../../src/logger.ts';
import { OutboxRelay } from '../../src/outbox/relay.ts';
import { startMatchWorkerService } from '../../src/services/match-worker/main.ts';
import type { FleetMember } from '../support/authz-fleet.ts';
import {
  check,
  login,
  logout,
  replicaState,
  startAuthMember,
  startAuthzMember,
} from '../support/authz-fleet.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { character } from '../support/replica-fixtures.ts';
import { envLines, rabbitClusterScript } from '../support/clusters.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, REDIS_URL, redisClient, testDatabase } from '../support/env.ts';
import { taskMetaKey } from '../../src/celery/result-backend.ts';
import { delay, waitFor } from '../support/wait.ts';

// Three RabbitMQ nodes (ccr1..ccr3 on 5681-5683) from scripts/rabbit-cluster.sh, started fresh
// for this file and removed after it. Every service is given all three nodes, with quorum
// queues for the Celery command queue and for each instance's event queue.
const PYTHON = '/usr/bin/python3';
const CELERY_FLOW = join(import.meta.dirname, '../interop/celery_flow.py');

let rabbitmqUrl: string;
let db: TestDatabase;
const closers: Array<() => Promise<unknown>> = [];

before(async () => {
  await rabbitClusterScript('down');
  rabbitmqUrl = envLines(await rabbitClusterScript('up')).RABBITMQ_URL!;
  db = await testDatabase();
});
after(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await db?.drop();
  await rabbitClusterScript('down');
});

/** A catalog row PostgreSQL takes (its ids are UUIDs). */
function char(code: string, matchLabel: string): Character {
  return character(code, matchLabel, { id: randomUUID() });
}

function databaseUrl(): string {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  return url.toString();
}

interface CeleryLine {
  task_id?: string;
  sent: boolean;
  ok?: boolean;
  error?: string;
  result?: { code?: string };
}

describe('a three-node RabbitMQ cluster: each node stopped in turn, one killed', () => {
  it('loses no Celery task, enforces every revocation, and leaves every replica ready and equal to its source', async (t) => {
    const env = { RABBITMQ_URL: rabbitmqUrl, EVENT_QUEUE_TYPE: 'quorum', MATCH_QUEUE_TYPE: 'quorum' };
    const plastic = char('pet', '플라스틱');
    await upsertCharacter(db.pool, plastic, 'unused.topic');

    const auth = await startAuthMember(env);
    closers.push(() => auth.service.close());
    const authz: FleetMember = await startAuthzMember(env);
    closers.push(() => authz.service.close());
    const worker = await startMatchWorkerService({
      ...env,
      REDIS_URL,
      DATABASE_URL: databaseUrl(),
      ADMIN_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'silent',
    });
    closers.push(() => worker.close());
    // The catalog's outbox relay, as the catalog service runs it, on the cluster.
    const relayBus = new RabbitMQBus({ url: rabbitmqUrl, logger: silentLogger });
    const relay = new OutboxRelay({
      pool: db.pool,
      bus: relayBus,
      listenConfig: db.config,
      pollIntervalMs: 100,
    });
    await relay.start();
    closers.push(() => relayBus.close());
    closers.push(() => relay.close());
    await waitFor(async () => (await replicaState(authz)) === 'ready', 'ext-authz ready', 30_000);
    await waitFor(() => worker.worker.consuming, 'the match worker consuming', 30_000);

    // Celery: Python's client, every node as its broker. After a node's shutdown, kombu 5.2
    // (py-amqp) can go on failing every send_task (MessageNacked, seen for over 60 s) where
    // rabbitmq-client's publisher, on the same cluster and schedule, never saw a nack: so the
    // client is treated as a caller treats a stuck client: with no task done for 15 s it is
    // replaced by a new process. Whether a task was lost is judged on the server side: every
    // task send_task returned for must have a stored result.
    const brokers = rabbitmqUrl.split(',').join(';');
    let celeryOut = '';
    let celeryErr = '';
    let lastDone = Date.now();
    let clientRestarts = 0;
    const startCelery = () => {
      const child = spawn(PYTHON, [
        CELERY_FLOW,
        brokers,
        REDIS_URL,
        JSON.stringify({ major_category: '재활용', middle_category: '플라스틱', minor_category: 'PET' }),
      ]);
      child.stdout.on('data', (c: Buffer) => {
        const text = c.toString();
        celeryOut += text;
        if (text.includes('"ok": true')) lastDone = Date.now();
      });
      child.stderr.on('data', (c: Buffer) => (celeryErr += c.toString()));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      return { child, exited };
    };
    let celery = startCelery();
    const watchdog = setInterval(() => {
      if (Date.now() - lastDone < 15_000) return;
      clientRestarts++;
      const stalled = celery.child;
      stalled.kill('SIGUSR1'); // its stacks, into celeryErr
      setTimeout(() => stalled.kill('SIGKILL'), 500);
      celery = startCelery();
      lastDone = Date.now();
    }, 1000);
    closers.push(async () => {
      clearInterval(watchdog);
      celery.child.kill('SIGKILL');
      await celery.exited;
    });
    const celeryLines = (): CeleryLine[] =>
      celeryOut
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as CeleryLine);
    const celeryDone = () => celeryLines().filter((l) => l.ok).length;

    // Logouts and catalog writes, steadily.
    const statuses = new Map<string, number>();
    let catalogWrites = 0;
    let writeFailures = 0;
    let stop = false;
    let n = 0;
    const at = { logout: '', write: '' };
    const loopDelay = monitorEventLoopDelay({ resolution: 20 });
    loopDelay.enable();
    const logouts = async (): Promise<void> => {
      while (!stop) {
        at.logout = 'login';
        const token = await login(auth, `cluster-user-${n++}`);
        at.logout = 'logout';
        statuses.set(token, await logout(auth, token));
        at.logout = 'delay';
        await delay(20);
      }
    };
    const writes = async (): Promise<void> => {
      while (!stop) {
        const c = char(`c${catalogWrites}`, `label-${catalogWrites % 7}`);
        try {
          at.write = 'upsert';
          await upsertCharacter(db.pool, c);
          at.write = 'done';
          catalogWrites++;
        } catch {
          writeFailures++;
        }
        await delay(50);
      }
    };
    // How long ext-authz's replica was not ready (sampled): a classic event queue on a stopped
    // node leaves it degraded (on Redis) until the node is back; a quorum one keeps it fed.
    let notReadyMs = 0;
    const sampler = (async () => {
      while (!stop) {
        const t = Date.now();
        if ((await replicaState(authz)) !== 'ready') notReadyMs += 100;
        await delay(Math.max(0, 100 - (Date.now() - t)));
      }
    })();
    const flows = [logouts(), writes(), sampler];
    const revoked = () => [...statuses.values()].filter((s) => s === 204).length;
    /** Until the flows made progress: each fault lasts through real work. */
    const progress = async (what: string): Promise<void> => {
      const [r, c, w] = [revoked(), celeryDone(), catalogWrites];
      try {
        await waitFor(
          () => revoked() >= r + 10 && celeryDone() >= c + 5 && catalogWrites >= w + 10,
          what,
          60_000,
          50,
        );
      } catch {
        // What stalled, as it stands at the deadline.
        const queues = await rabbitClusterScript(
          'ctl',
          what.includes('node 1 stopped') ? '2' : '1',
          'list_queues',
          'name',
          'type',
          'leader',
          'messages_ready',
          'messages_unacknowledged',
          'consumers',
        ).catch((err: unknown) => String(err));
        const sentIds = [...celeryErr.matchAll(/^sent (\S+)$/gm)].map((m) => m[1]!);
        const last = sentIds.at(-1);
        const redis = await redisClient();
        const lastMeta = last ? await redis.get(taskMetaKey(last)) : null;
        await redis.close();
        throw new Error(
          `${sentIds.length} tasks sent, the last ${last} has a stored result: ${lastMeta !== null}; ` +
            `last Celery lines ${JSON.stringify(celeryLines().slice(-3))}; ` +
            `no progress ${what} in 60 s (Celery clients replaced: ${clientRestarts}): logouts ${revoked() - r}/10, Celery tasks ${celeryDone() - c}/5, ` +
            `catalog writes ${catalogWrites - w}/10; flows at ${JSON.stringify(at)}; ` +
            `event loop delay max ${Math.round(loopDelay.max / 1e6)} ms; worker ${JSON.stringify(worker.worker.stats)}; ` +
            `queues:\n${queues}\ncelery stderr: ${celeryErr.replace(/^sent .*\n/gm, '').slice(-6000)}`,
        );
      }
    };
    try {
      await progress('before any fault');
      for (const node of ['1', '2', '3']) {
        await rabbitClusterScript('stop', node);
        await progress(`with node ${node} stopped`);
        await rabbitClusterScript('start', node);
        await progress(`after node ${node} came back`);
      }
      await rabbitClusterScript('kill', '2');
      await progress('with node 2 killed');
      await rabbitClusterScript('start', '2');
      await progress('after node 2 came back from the kill');
    } finally {
      stop = true;
      await Promise.all(flows);
      clearInterval(watchdog);
      celery.child.stdin.end();
      await celery.exited;
    }

    // No Celery task lost: every task send_task accepted got its result.
    const lines = celeryLines();
    t.diagnostic(
      `celery: ${lines.filter((l) => l.ok).length} done, ${lines.filter((l) => !l.sent).length} refused at send; ` +
        `logouts: ${revoked()}; catalog writes: ${catalogWrites}; ext-authz not ready for ~${notReadyMs} ms; ` +
        `Celery clients replaced: ${clientRestarts}`,
    );
    const sentIds = [...celeryErr.matchAll(/^sent (\S+)$/gm)].map((m) => m[1]!);
    const results = await redisClient();
    try {
      const missing = async () => {
        const metas = await Promise.all(sentIds.map((id) => results.get(taskMetaKey(id))));
        return sentIds.filter((_, i) => metas[i] === null);
      };
      await waitFor(async () => (await missing()).length === 0, 'a result for every task sent', 30_000).catch(
        () => undefined,
      );
      assert.deepEqual(
        await missing(),
        [],
        'every task send_task returned for was run and its result stored',
      );
    } finally {
      await results.close();
    }
    assert.deepEqual(
      lines.filter((l) => l.sent && !l.ok && l.error !== 'TimeoutError'),
      [],
      'no task failed (a get() that timed out is judged by the stored result above)',
    );
    assert.ok(
      lines.filter((l) => l.ok).every((l) => l.result?.code === 'pet'),
      'each task matched the character',
    );
    assert.equal(writeFailures, 0, 'PostgreSQL took every catalog write');

    // Every revocation enforced, by the running ext-authz.
    const tokens = [...statuses.entries()].filter(([, s]) => s === 204).map(([t]) => t);
    assert.deepEqual(
      [...statuses.values()].filter((s) => s !== 204),
      [],
      'Redis took every logout (the broker is not on its path)',
    );
    await waitFor(
      async () => (await replicaState(authz)) === 'ready',
      'ext-authz ready after the faults',
      30_000,
    );
    const accepted: number[] = [];
    for (const token of tokens) if ((await check(authz, token)).status !== 401) accepted.push(1);
    assert.equal(accepted.length, 0, `${accepted.length} of ${tokens.length} revoked tokens still accepted`);

    // The match worker's catalog replica: ready and equal to PostgreSQL.
    await waitFor(() => worker.replica.state === 'ready', 'the catalog replica ready', 30_000);
    const { rows } = await db.pool.query<{ id: string; dialog: string }>('SELECT id, dialog FROM characters');
    await waitFor(
      () => {
        const have = new Map(worker.replica.entries().map(([, c]) => [c.id, c.dialog]));
        return rows.length === have.size && rows.every((r) => have.get(r.id) === r.dialog);
      },
      `the catalog replica equal to PostgreSQL (${rows.length} rows, ${catalogWrites} written)`,
      30_000,
    );
  });
});
