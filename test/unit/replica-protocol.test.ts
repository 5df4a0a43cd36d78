import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Bus } from '../../src/bus/bus.ts';
import { blacklistDataset, toBlacklistValue } from '../../src/datasets/blacklist.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { catalogDataset } from '../../src/datasets/catalog.ts';
import { encodeEvent } from '../../src/events/codec.ts';
import { heartbeatPayload, RELOAD_TYPE } from '../../src/events/control.ts';
import type { Change } from '../../src/events/event.ts';
import type { Dataset } from '../../src/replica/dataset.ts';
import { comparableFrom, DIGEST_BUCKET_S } from '../../src/replica/digest.ts';
import type { ReplicatedCacheOptions } from '../../src/replica/options.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import { deferred } from '../../src/util/deferred.ts';
import { FakeClock, settle } from '../support/fake-clock.ts';
import { character, memoryPair } from '../support/replica-fixtures.ts';

const open: Array<ReplicatedCache<unknown>> = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

/** A replica on a memory bus over a memory source that keeps epoch, digest and log, as the real ones do. */
function world<V>(dataset: Dataset<V>, overrides: Partial<ReplicatedCacheOptions<V>> = {}) {
  const { broker, bus, publisher } = memoryPair();
  const source = new MemorySource<V>({ dataset });
  const clock = new FakeClock();
  const replica = new ReplicatedCache<V>({ dataset, bus, source, clock, ...overrides });
  open.push(replica as ReplicatedCache<unknown>);
  /** A writer: commits to the source, returns the event to publish (or not). */
  const commit = (change: Change<V>) => {
    const version = source.write(change);
    return { version, epoch: source.epoch, payload: dataset.encode!(change) };
  };
  const publish = async (
    event: { version?: number; epoch?: string; payload: Record<string, unknown> },
    from: Bus = publisher,
  ) => {
    const { body, headers } = encodeEvent(event.payload, {
      version: event.version,
      epoch: event.epoch,
      published_at: clock.now(),
    });
    await from.publish(dataset.topic, body, { headers });
    await settle();
  };
  /** What a writer's HeartbeatPublisher sends: the source's state as read now. */
  const heartbeat = async () => {
    const from = dataset.expireAt ? comparableFrom(clock.now()) : -Infinity;
    const state = await source.state(from);
    const payload = heartbeatPayload({
      dataset: dataset.name,
      epoch: state.epoch,
      version: state.version,
      digest: state.digest,
      digestFrom: dataset.expireAt ? from * DIGEST_BUCKET_S : undefined,
      readAt: clock.now(),
    });
    await publish({ version: state.version, epoch: state.epoch, payload });
  };
  return { broker, bus, publisher, source, clock, replica, commit, publish, heartbeat };
}

const upsert = (c: Character): Change<Character> => ({ kind: 'set', key: c.id, value: c });
const codes = (replica: ReplicatedCache<Character>) =>
  replica
    .values()
    .map((c) => c.code)
    .sort();

describe('sync protocol: ordering by version', () => {
  it('rebases events that crossed during a resync, instead of loading again', async () => {
    const w = world(catalogDataset);
    w.commit(upsert(character('a')));
    await w.replica.start();
    const gate = deferred<void>();
    const load = w.source.load.bind(w.source);
    let loads = 0;
    w.source.load = async (put) => {
      loads++;
      const result = await load(put);
      await gate.promise;
      return result;
    };
    const resync = w.replica.resync('manual');
    // Two writers: v3 reaches the bus before v2, again and again, while the snapshot loads.
    for (let i = 0; i < 5; i++) {
      const first = w.commit(upsert(character(`x${i}`)));
      const second = w.commit(upsert(character(`y${i}`)));
      await w.publish(second);
      await w.publish(first);
    }
    gate.resolve();
    await resync;
    await settle();
    assert.equal(loads, 1, 'one load, whatever the order on the wire');
    assert.equal(w.replica.version, 11);
    assert.equal(w.replica.stats().gaps, 0);
    assert.deepEqual(codes(w.replica), ['a', 'x0', 'x1', 'x2', 'x3', 'x4', 'y0', 'y1', 'y2', 'y3', 'y4']);
  });

  it('repairs a lost event from the source change log, without a reload', async () => {
    const w = world(catalogDataset);
    await w.replica.start();
    w.commit(upsert(character('lost'))); // v1, its event lost
    await w.publish(w.commit(upsert(character('next')))); // v2
    assert.equal(w.replica.version, 0, 'v2 waits for v1');
    await w.clock.advance(200);
    await settle();
    assert.equal(w.replica.version, 2);
    assert.deepEqual(codes(w.replica), ['lost', 'next']);
    const stats = w.replica.stats();
    assert.equal(stats.catch_ups, 1);
    assert.equal(stats.resyncs, 1, 'no reload');
  });
});

describe('sync protocol: epochs', () => {
  it('a source restarted empty is a new epoch: the replica reloads at once and drops the old epoch late events', async () => {
    const w = world(blacklistDataset);
    const exp = (s: number) => toBlacklistValue(w.clock.now() / 1000 + s);
    const old = [1, 2, 3].map((i) => w.commit({ kind: 'set', key: `old-${i}`, value: exp(600) }));
    await w.replica.start();
    const oldEpoch = w.replica.epoch;
    w.source.reset(); // Redis restarted without persistence: versions start again
    const fresh = w.commit({ kind: 'set', key: 'after-restart', value: exp(600) }); // v1 of the new epoch
    await w.publish(fresh);
    await settle();
    assert.notEqual(w.replica.epoch, oldEpoch);
    assert.equal(w.replica.has('after-restart'), true, 'v1 of the new epoch is not a "duplicate"');
    assert.equal(w.replica.has('old-1'), false, 'the replica equals its source');
    assert.equal(w.replica.stats().last_resync_reason, 'epoch');
    await w.publish(old[2]!); // a late event of the old epoch
    assert.equal(w.replica.has('old-3'), false);
    assert.equal(w.replica.stats().events_stale_epoch, 1);
  });

  it('an event with an epoch the source does not have costs a read, not a reload', async () => {
    const w = world(catalogDataset);
    w.commit(upsert(character('a')));
    await w.replica.start();
    const forged = { version: 1, epoch: 'forged-epoch', payload: { type: 'delete', character_id: 'id-a' } };
    await w.publish(forged);
    await settle();
    assert.deepEqual(codes(w.replica), ['a']);
    assert.equal(w.replica.stats().resyncs, 1);
    assert.equal(w.replica.stats().source_checks, 1);
  });
});

describe('sync protocol: anti-entropy by content', () => {
  it('a forged event with the next version is found by the digest and repaired; the real one then applies', async () => {
    const w = world(catalogDataset);
    w.commit(upsert(character('a')));
    await w.replica.start();
    // The forger takes v2; the real v2 is then a "duplicate".
    await w.publish({
      version: 2,
      epoch: w.source.epoch,
      payload: catalogDataset.encode!(upsert(character('evil'))),
    });
    await w.publish(w.commit(upsert(character('real'))));
    assert.deepEqual(codes(w.replica), ['a', 'evil'], 'versions alone cannot tell');
    await w.heartbeat();
    await w.clock.advance(200); // the grace for an event in flight, then a read of the source
    await settle();
    assert.deepEqual(codes(w.replica), ['a', 'real']);
    const stats = w.replica.stats();
    assert.equal(stats.divergences, 1);
    assert.equal(stats.last_resync_reason, 'diverged');
    assert.equal(w.replica.state, 'ready');
  });

  it("an unsigned empty full_refresh is not trusted: degraded at once, the source's catalog back", async () => {
    const w = world(catalogDataset);
    for (const code of ['a', 'b', 'c']) w.commit(upsert(character(code)));
    await w.replica.start();
    await w.publish({ payload: { type: 'full_refresh', characters: [] } });
    assert.deepEqual(codes(w.replica), []);
    assert.equal(w.replica.state, 'degraded', 'an unversioned change is unproven until a read covers it');
    await w.clock.advance(200);
    await settle();
    assert.deepEqual(codes(w.replica), ['a', 'b', 'c']);
    assert.equal(w.replica.state, 'ready');
  });

  it("the seed's publisher (write the table, then publish without a version) converges with no reload", async () => {
    const w = world(catalogDataset);
    w.commit(upsert(character('a')));
    await w.replica.start();
    const edited = character('a', 'plastic', { name: 'renamed by the Python job' });
    w.source.writeUnversioned(upsert(edited));
    await w.publish({ payload: catalogDataset.encode!(upsert(edited)) });
    await settle();
    assert.equal(w.replica.get('id-a')?.name, 'renamed by the Python job');
    assert.equal(w.replica.state, 'degraded', 'unproven until a read after it');
    await w.clock.advance(1);
    await w.heartbeat();
    assert.equal(w.replica.state, 'ready', 'the next heartbeat proved it');
    for (let i = 0; i < 10; i++) {
      await w.heartbeat();
      await w.clock.advance(250);
    }
    const stats = w.replica.stats();
    assert.equal(stats.resyncs, 1);
    assert.equal(stats.divergences, 0);
  });

  it('a forged revocation far ahead of the source is taken back once the source shows it never had it', async () => {
    const w = world(blacklistDataset);
    await w.replica.start();
    const value = toBlacklistValue(w.clock.now() / 1000 + 600);
    await w.publish({
      version: 40,
      epoch: w.source.epoch,
      payload: blacklistDataset.encode!({ kind: 'set', key: 'victim', value }),
    });
    assert.equal(w.replica.has('victim'), true, 'revocations apply ahead of their version');
    await w.clock.advance(200);
    await settle();
    assert.equal(w.replica.has('victim'), false);
    assert.equal(w.replica.stats().events_held, 0);
    assert.equal(w.replica.state, 'ready');
  });

  it('a heartbeat does not prove a forged revocation applied ahead of its version; the real one takes that version', async () => {
    // The simulator found it (seed 90417, schedule 180): the real events filled the gap before
    // the gap timer, the forged change took their version, and a proof at a lower version,
    // blind to changes applied early, kept the replica ready with it while the source was down.
    const w = world(blacklistDataset);
    await w.replica.start();
    const value = toBlacklistValue(w.clock.now() / 1000 + 600);
    const set = (key: string) => blacklistDataset.encode!({ kind: 'set', key, value });
    await w.publish({ version: 3, epoch: w.source.epoch, payload: set('victim') });
    assert.equal(w.replica.has('victim'), true, 'revocations apply ahead of their version');
    await w.clock.advance(10);
    await w.heartbeat(); // the source at v0, read after the forged change was applied
    await settle();
    assert.equal(w.replica.has('victim'), false, 'taken back by the read the heartbeat asked for');
    assert.equal(w.replica.stats().source_checks, 1);
    for (const key of ['a', 'b', 'c']) await w.publish(w.commit({ kind: 'set', key, value }));
    assert.equal(w.replica.version, 3);
    assert.deepEqual(
      w.replica
        .entries()
        .map(([key]) => key)
        .sort(),
      ['a', 'b', 'c'],
    );
    await w.heartbeat();
    await settle();
    assert.equal(w.replica.state, 'ready');
    assert.equal(w.replica.stats().divergences, 0);
  });
});

describe('sync protocol: the bound on silent staleness', () => {
  it('heartbeats keep a replica ready with no read of the source', async () => {
    const w = world(catalogDataset);
    w.commit(upsert(character('a')));
    await w.replica.start();
    for (let i = 0; i < 20; i++) {
      await w.heartbeat();
      await w.clock.advance(250);
      assert.equal(w.replica.state, 'ready');
    }
    assert.equal(w.replica.stats().source_checks, 0);
  });

  it('without heartbeats it reads the source itself and finds a write whose event never came', async () => {
    const w = world(catalogDataset);
    await w.replica.start();
    w.commit(upsert(character('quiet'))); // the writer lost its broker link after the commit
    await w.clock.advance(500); // staleCheckMs: a read shows v1
    await w.clock.advance(200); // the event's grace: still missing, so the log is read
    await settle();
    assert.equal(w.replica.version, 1);
    assert.deepEqual(codes(w.replica), ['quiet']);
    assert.equal(w.replica.state, 'ready');
    assert.equal(w.replica.stats().catch_ups, 1);
  });

  it('a replica that cannot prove it is current within the bound says degraded, and ready again once it can', async () => {
    const w = world(catalogDataset);
    await w.replica.start();
    w.source.failWith = new Error('source down');
    await w.clock.advance(999);
    assert.equal(w.replica.state, 'ready');
    await w.clock.advance(2);
    assert.equal(w.replica.state, 'degraded');
    w.source.failWith = undefined;
    await w.clock.advance(300);
    await settle();
    assert.equal(w.replica.state, 'ready');
  });
});

describe('sync protocol: reload markers', () => {
  it('loads the source at the marker, and never reports that version before holding its data', async () => {
    const w = world(catalogDataset);
    await w.replica.start();
    const big = Array.from({ length: 50 }, (_, i) => character(`big${i}`));
    const version = w.source.replace(big.map((c) => [c.id, c]));
    const gate = deferred<void>();
    const load = w.source.load.bind(w.source);
    w.source.load = async (put) => {
      await gate.promise;
      return load(put);
    };
    await w.publish({ version, epoch: w.source.epoch, payload: { type: RELOAD_TYPE, dataset: 'catalog' } });
    assert.equal(w.replica.version, 0, 'the data is not there yet');
    assert.equal(w.replica.state, 'degraded');
    gate.resolve();
    await settle();
    assert.equal(w.replica.version, 1);
    assert.equal(w.replica.size, 50);
    assert.equal(w.replica.stats().last_resync_reason, 'reload');
    await w.publish(w.commit(upsert(character('after'))));
    assert.equal(w.replica.version, 2, 'the next write applies as usual');
    assert.ok(w.replica.get('id-after'));
  });
});
