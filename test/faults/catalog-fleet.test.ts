import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { startCatalog } from '../../src/services/catalog/main.ts';
import { startMatchWorker } from '../../src/services/match-worker/main.ts';
import type { RunningService } from '../../src/services/service.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, REDIS_URL, testDatabase } from '../support/env.ts';
import { rabbitProxy, urlThrough } from '../support/rabbit.ts';
import type { TcpProxy } from '../support/tcp-proxy.ts';
import { delay, waitFor } from '../support/wait.ts';

const TOKEN = 'fleet-admin-token-0123456789';
let db: TestDatabase;
const services: Array<{ service: RunningService; proxy: TcpProxy }> = [];

function env(proxy: TcpProxy): NodeJS.ProcessEnv {
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${db.schema}`);
  return {
    DATABASE_URL: url.toString(),
    RABBITMQ_URL: urlThrough(proxy),
    REDIS_URL,
    PORT: '0',
    ADMIN_PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_TOKEN: TOKEN,
    LOG_LEVEL: 'silent',
  };
}

async function start(starter: typeof startCatalog): Promise<RunningService> {
  const proxy = await rabbitProxy();
  const service = await starter(env(proxy));
  services.push({ service, proxy });
  return service;
}

before(async () => {
  db = await testDatabase();
});
after(async () => {
  for (const { service, proxy } of services) {
    await service.close();
    await proxy.close();
  }
  await db.drop();
});

interface ReplicaView {
  dataset: string;
  state: string;
  version: number;
  size: number;
}

async function replicaOf(service: RunningService): Promise<ReplicaView> {
  const list = (await (await fetch(`${service.endpoints.admin}/replicas`)).json()) as ReplicaView[];
  return list.find((r) => r.dataset === 'catalog')!;
}

describe('faults: two catalog services and a match worker through cuts and a broker restart', () => {
  it('end equal to the database, with every admin write accepted', async () => {
    const [a, b, worker] = [
      await start(startCatalog),
      await start(startCatalog),
      await start(startMatchWorker),
    ];
    let writes = 0;
    let failures = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const target = writes % 2 === 0 ? a : b;
        const code = `fleet-${writes % 25}`;
        const res =
          writes % 7 === 6
            ? await fetch(`${target.endpoints.http}/admin/characters/${code}`, {
                method: 'DELETE',
                headers: { authorization: `Bearer ${TOKEN}` },
              })
            : await fetch(`${target.endpoints.http}/admin/characters/${code}`, {
                method: 'PUT',
                headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
                body: JSON.stringify({ name: `Fleet ${writes}`, match_label: `label-${writes % 5}` }),
              });
        if (res.status >= 500) failures++;
        writes++;
        await delay(10);
      }
    })();
    // Every fault lasts until at least 3 writes were made during it, however slow the machine.
    const writesDuring = async (what: string) => {
      const from = writes;
      await waitFor(() => writes >= from + 3, `3 admin writes while ${what}`, 15_000);
    };
    for (let round = 0; round < 2; round++) {
      for (const [i, { proxy }] of services.entries()) {
        proxy.cut();
        await delay(300);
        await writesDuring(`service ${i} is cut off the broker`);
        proxy.restore();
        await delay(200);
      }
    }
    execFileSync('rabbitmqctl', ['stop_app'], { stdio: 'ignore' });
    await delay(1000);
    await writesDuring('the broker is stopped');
    execFileSync('rabbitmqctl', ['start_app'], { stdio: 'ignore' });
    await delay(500);
    await writesDuring('the broker is back');
    writing = false;
    await writer;
    assert.equal(failures, 0, 'no admin write failed, broker or not');

    const source = catalogSource(db.pool);
    const target = await source.version();
    const truth = new Map<string, Character>();
    await source.load((k, v) => truth.set(k, v));
    for (const service of [a, b, worker]) {
      await waitFor(
        async () => {
          const r = await replicaOf(service);
          return r.state === 'ready' && r.version === target;
        },
        `${service.name} converged to version ${target}`,
        60_000,
        100,
      );
      assert.equal((await replicaOf(service)).size, truth.size);
    }
    for (const service of [a, b]) {
      const served = (await (
        await fetch(`${service.endpoints.http}/api/v1/characters/catalog`)
      ).json()) as Character[];
      assert.deepEqual(new Map(served.map((c) => [c.id, c])), truth);
    }
  });
});
