import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { OutboxRelay } from '../../src/outbox/relay.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { catalogSource } from '../../src/sources/catalog-source.ts';
import { upsertCharacter } from '../support/catalog-writes.ts';
import type { TestDatabase } from '../support/env.ts';
import { DATABASE_URL, RABBITMQ_URL, testDatabase, uniqueName } from '../support/env.ts';
import { deleteExchanges, testBus } from '../support/rabbit.ts';
import { character } from '../support/replica-fixtures.ts';
import { waitFor } from '../support/wait.ts';

const topic = uniqueName('fault.crash');
const dataset = { ...catalogDataset, topic };
let db: TestDatabase;
let replica: ReplicatedCache<Character>;
const closers: Array<() => Promise<void>> = [];

before(async () => {
  db = await testDatabase();
  const bus = await testBus();
  // No periodic check: only the outbox may repair what follows.
  replica = new ReplicatedCache<Character>({
    dataset,
    bus,
    source: catalogSource(db.pool),
    versionCheckIntervalMs: 0,
  });
  await replica.start();
  closers.push(async () => {
    await replica.close();
    await bus.close();
  });
});
after(async () => {
  await stopRelays();
  for (const close of closers.reverse()) await close();
  await db.drop();
  await deleteExchanges(topic);
});

function child(script: string, env: Record<string, string>) {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', script)], {
    env: { ...process.env, DATABASE_URL, RABBITMQ_URL, TEST_SCHEMA: db.schema, TOPIC: topic, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  proc.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  closers.push(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    return Promise.resolve();
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    proc.on('exit', (_code, signal) => resolve(signal)),
  );
  return { proc, output: () => output, exited };
}

const relayClosers: Array<() => Promise<void>> = [];

async function startRelay(): Promise<OutboxRelay> {
  const bus = await testBus();
  const relay = new OutboxRelay({ pool: db.pool, bus, listenConfig: db.config, pollIntervalMs: 100 });
  relayClosers.push(async () => {
    await relay.close();
    await bus.close();
  });
  await relay.start();
  return relay;
}

async function stopRelays(): Promise<void> {
  for (const close of relayClosers.splice(0)) await close();
}

describe('faults: processes killed between commit and publish', () => {
  it('a writer killed right after its commit: the outbox publishes what it committed', async () => {
    const writer = child('commit-then-die.ts', { WRITES: '5' });
    assert.equal(await writer.exited, 'SIGKILL');
    assert.match(writer.output(), /committed/);
    const target = await catalogSource(db.pool).version();
    assert.equal(target, 5);
    assert.equal(replica.version, 0, 'nothing was published before the crash');
    await startRelay();
    await waitFor(() => replica.version === target, 'replica repaired by the relay');
    assert.equal(replica.size, 5);
  });

  it('a relay killed mid-batch: a new relay republishes the rest, replicas drop the duplicates', async () => {
    await stopRelays();
    for (let i = 0; i < 300; i++)
      await upsertCharacter(db.pool, { ...character(`k${i}`), id: randomUUID() }, topic);
    const target = await catalogSource(db.pool).version();
    const relayChild = child('relay-process.ts', {});
    await waitFor(() => /published [1-9]\d*/.test(relayChild.output()), 'the child relay publishing', 15_000);
    relayChild.proc.kill('SIGKILL');
    assert.equal(await relayChild.exited, 'SIGKILL');
    await waitFor(() => replica.version > 5, 'some events arrived before the kill');
    const relay = await startRelay();
    await waitFor(() => replica.version === target, 'replica at the last version', 20_000);
    await waitFor(async () => (await relay.pending()) === 0, 'every row marked sent');
    const truth = new Map<string, Character>();
    await catalogSource(db.pool).load((k, v) => truth.set(k, v));
    assert.equal(replica.size, truth.size);
    for (const [id, c] of truth) assert.deepEqual(replica.get(id), c);
    assert.equal(replica.stats().gaps, 0, 'in order, no gaps');
  });
});
