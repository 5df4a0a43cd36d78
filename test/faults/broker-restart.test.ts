import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { catalogFixture } from '../support/catalog-fixture.ts';
import { testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import { delay, waitFor } from '../support/wait.ts';

const fx = catalogFixture('fault.restart');
const { topic, dataset } = fx;

function rabbitmqctl(...args: string[]): void {
  execFileSync('rabbitmqctl', args, { stdio: 'ignore', timeout: 120_000 });
}

describe('faults: the RabbitMQ broker restarts', () => {
  it('ends with every replica equal to the source, writes accepted throughout', async () => {
    const relay = await fx.startRelay({ bus: { publishTimeoutMs: 1000 } });
    const replicas = await Promise.all(
      [1, 2, 3].map(async () => {
        const bus = await testBus();
        const r = new ReplicatedCache<Character>({
          dataset,
          bus,
          source: catalogSource(fx.db.pool),
          versionCheckIntervalMs: 0,
        });
        fx.defer(async () => {
          await r.close();
          await bus.close();
        });
        await r.start();
        return r;
      }),
    );

    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await upsertCharacter(fx.db.pool, { ...character(`w${written}`), id: randomUUID() }, topic);
        written++;
        await delay(20);
      }
    })();
    await delay(300);
    rabbitmqctl('stop_app');
    await waitFor(() => replicas.every((r) => r.state === 'degraded'), 'every replica degraded', 15_000);
    const writtenWhileDown = written;
    await delay(500);
    assert.ok(written > writtenWhileDown, 'writes keep succeeding while the broker is down');
    rabbitmqctl('start_app');
    await delay(500);
    writing = false;
    await writer;

    const source = catalogSource(fx.db.pool);
    const target = await source.version();
    const truth = new Map<string, Character>();
    await source.load((k, v) => truth.set(k, v));
    for (const r of replicas) {
      await waitFor(
        () => r.state === 'ready' && r.version === target,
        'replica converged after the restart',
        60_000,
      );
      assert.equal(r.size, truth.size);
      for (const [id, c] of truth) assert.deepEqual(r.get(id), c);
    }
    await waitFor(async () => (await relay.pending()) === 0, 'outbox drained', 30_000);
  });
});
