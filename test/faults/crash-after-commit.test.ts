import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import { catalogFixture } from '../support/catalog-fixture.ts';
import { DATABASE_URL, RABBITMQ_URL } from '../support/env.ts';
import { testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import { waitFor } from '../support/wait.ts';

const fx = catalogFixture('fault.crash');
const { topic, dataset } = fx;
let replica: ReplicatedCache<Character>;

before(async () => {
  await fx.ready();
  const bus = await testBus();
  // No periodic check and no staleness bound (whose reads of the source would find the
  // writes by themselves once the writer is slow to die): only the outbox may repair what follows.
  replica = new ReplicatedCache<Character>({
    dataset,
    bus,
    source: catalogSource(fx.db.pool),
    versionCheckIntervalMs: 0,
    maxStalenessMs: 0,
  });
  await replica.start();
  fx.defer(async () => {
    await replica.close();
    await bus.close();
  });
});

function child(script: string, env: Record<string, string>) {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', script)], {
    env: { ...process.env, DATABASE_URL, RABBITMQ_URL, TEST_SCHEMA: fx.db.schema, TOPIC: topic, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  proc.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  fx.defer(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    return Promise.resolve();
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    proc.on('exit', (_code, signal) => resolve(signal)),
  );
  return { proc, output: () => output, exited };
}

describe('faults: processes killed between commit and publish', () => {
  it('a writer killed right after its commit: the outbox publishes what it committed', async () => {
    const writer = child('commit-then-die.ts', { WRITES: '5' });
    assert.equal(await writer.exited, 'SIGKILL');
    assert.match(writer.output(), /committed/);
    const target = await catalogSource(fx.db.pool).version();
    assert.equal(target, 5);
    assert.equal(replica.version, 0, 'nothing was published before the crash');
    await fx.startRelay();
    await waitFor(() => replica.version === target, 'replica repaired by the relay');
    assert.equal(replica.size, 5);
  });

  it('a relay killed mid-batch: a new relay republishes the rest, replicas drop the duplicates', async () => {
    await fx.stopRelays();
    for (let i = 0; i < 300; i++)
      await upsertCharacter(fx.db.pool, { ...character(`k${i}`), id: randomUUID() }, topic);
    const target = await catalogSource(fx.db.pool).version();
    const relayChild = child('relay-process.ts', {});
    await waitFor(() => /published [1-9]\d*/.test(relayChild.output()), 'the child relay publishing', 15_000);
    relayChild.proc.kill('SIGKILL');
    assert.equal(await relayChild.exited, 'SIGKILL');
    await waitFor(() => replica.version > 5, 'some events arrived before the kill');
    const relay = await fx.startRelay();
    await waitFor(() => replica.version === target, 'replica at the last version', 20_000);
    await waitFor(async () => (await relay.pending()) === 0, 'every row marked sent');
    const truth = new Map<string, Character>();
    await catalogSource(fx.db.pool).load((k, v) => truth.set(k, v));
    assert.equal(replica.size, truth.size);
    for (const [id, c] of truth) assert.deepEqual(replica.get(id), c);
    assert.equal(replica.stats().gaps, 0, 'in order, no gaps');
  });
});
