import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Bus } from '../../src/bus/bus.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { CATALOG_TOPIC, catalogDataset } from '../../src/datasets/catalog.ts';
import { BLACKLIST_TOPIC, blacklistDataset, toBlacklistValue } from '../../src/datasets/blacklist.ts';
import { isCachecastError } from '../../src/errors.ts';
import { ReplicatedCache } from '../../src/replica/replicated-cache.ts';
import type { ReplicatedCacheOptions } from '../../src/replica/options.ts';
import { MemorySource } from '../../src/sources/memory-source.ts';
import type { SnapshotSource } from '../../src/replica/source.ts';
import { deferred } from '../../src/util/deferred.ts';
import { FakeClock, settle } from '../support/fake-clock.ts';
import { character, memoryPair, publishEvent } from '../support/replica-fixtures.ts';

const open: Array<ReplicatedCache<unknown>> = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
});

function catalog(overrides: Partial<ReplicatedCacheOptions<Character>> = {}) {
  const { broker, bus, publisher } = memoryPair();
  const source = new MemorySource<Character>();
  const clock = new FakeClock();
  const replica = new ReplicatedCache<Character>({
    dataset: catalogDataset,
    bus,
    source,
    clock,
    versionCheckIntervalMs: 0,
    ...overrides,
  });
  open.push(replica as ReplicatedCache<unknown>);
  return { broker, bus, publisher, source, clock, replica };
}

/** A blacklist replica (TTL entries, commutative) on a memory bus; `revoke` publishes a logout. */
function blacklist(
  source: SnapshotSource<number> = new MemorySource<number>(),
  overrides: Partial<ReplicatedCacheOptions<number>> = {},
) {
  const { bus, publisher } = memoryPair();
  const clock = new FakeClock();
  const replica = new ReplicatedCache<number>({
    dataset: blacklistDataset,
    bus,
    source,
    clock,
    versionCheckIntervalMs: 0,
    ...overrides,
  });
  open.push(replica as ReplicatedCache<unknown>);
  const revoke = (jti: string, version: number, expiresInS = 600) =>
    publishEvent(
      publisher,
      BLACKLIST_TOPIC,
      { type: 'blacklist_added', jti, expire_at: clock.now() / 1000 + expiresInS },
      { version },
    );
  return { replica, clock, revoke };
}

/** An upsert event as cachecast publishers send it. */
function upsert(publisher: Bus, c: Character, version: number): Promise<void> {
  return publishEvent(publisher, CATALOG_TOPIC, { type: 'upsert', character: c }, { version });
}

function seed(source: MemorySource<Character>, ...codes: string[]): void {
  for (const code of codes) {
    const c = character(code);
    source.set(c.id, c);
  }
}

describe('ReplicatedCache: sync protocol', () => {
  it('is syncing until the first snapshot, then ready with the source data and version', async () => {
    const { replica, source } = catalog();
    seed(source, 'a', 'b');
    assert.equal(replica.state, 'syncing');
    await replica.start();
    assert.equal(replica.state, 'ready');
    assert.equal(replica.version, 2);
    assert.deepEqual(
      replica
        .values()
        .map((c) => c.code)
        .sort(),
      ['a', 'b'],
    );
    assert.equal(replica.get('id-a')?.name, 'Name a');
  });

  it('buffers events that arrive while the snapshot loads and applies only those newer than it', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a'); // version 1
    const gate = deferred();
    const load = source.load.bind(source);
    let loads = 0;
    source.load = async (put) => {
      loads++;
      const snapshot = await load(put); // reads version 1 and 'a'
      await gate.promise;
      return snapshot;
    };
    const started = replica.start();
    await settle();
    // Published after subscribe but before the snapshot completes.
    await upsert(publisher, character('a', 'x'), 1);
    await upsert(publisher, character('b'), 2);
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'delete', character_id: 'id-a' }, { version: 3 });
    await settle();
    assert.equal(replica.state, 'syncing');
    gate.resolve();
    await started;
    assert.equal(loads, 1);
    assert.equal(replica.version, 3);
    assert.deepEqual(
      replica.values().map((c) => c.code),
      ['b'],
    );
  });

  it('applies v == local+1, drops v <= local as a duplicate', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    await upsert(publisher, character('b'), 2);
    await upsert(publisher, character('b', 'changed'), 2);
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'delete', character_id: 'id-a' }, { version: 1 });
    await settle();
    assert.equal(replica.version, 2);
    assert.equal(replica.get('id-b')?.match_label, 'label-b');
    assert.ok(replica.get('id-a'));
    const stats = replica.stats();
    assert.equal(stats.events_applied, 1);
    assert.equal(stats.events_duplicate, 2);
  });

  it('resyncs from the source when a version gap shows an event was lost', async () => {
    const { replica, source, publisher, clock } = catalog();
    seed(source, 'a');
    await replica.start();
    // Two changes reach the source; only the second event reaches the bus.
    seed(source, 'b'); // v2, its event lost
    seed(source, 'c'); // v3
    await upsert(publisher, character('c'), 3);
    await settle();
    assert.equal(replica.stats().resyncs, 1, 'waits gapWaitMs for the missing event first');
    await clock.advance(200);
    await settle();
    assert.equal(replica.version, 3);
    assert.deepEqual(
      replica
        .values()
        .map((c) => c.code)
        .sort(),
      ['a', 'b', 'c'],
    );
    const stats = replica.stats();
    assert.equal(stats.gaps, 1);
    assert.equal(stats.last_resync_reason, 'gap');
    assert.equal(replica.state, 'ready');
  });

  it('applies events without a version as they come and keeps its version', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'upsert', character: character('k') });
    await publishEvent(publisher, CATALOG_TOPIC, {
      type: 'full_refresh',
      characters: [character('x'), character('y')],
    });
    await settle();
    assert.equal(replica.version, 1);
    assert.deepEqual(
      replica
        .values()
        .map((c) => c.code)
        .sort(),
      ['x', 'y'],
    );
    assert.equal(replica.stats().gaps, 0);
  });

  it('with the bound off, the periodic check repairs a write whose event never came, after the grace period', async () => {
    const { replica, source, clock } = catalog({
      maxStalenessMs: 0,
      versionCheckIntervalMs: 30_000,
      versionCheckGraceMs: 1000,
    });
    seed(source, 'a');
    await replica.start();
    seed(source, 'quiet'); // committed, event never published
    await clock.advance(29_999);
    assert.equal(replica.version, 1);
    await clock.advance(1);
    assert.equal(replica.version, 1, 'still inside the grace period');
    await clock.advance(1000);
    await settle();
    assert.equal(replica.version, 2);
    assert.ok(replica.get('id-quiet'));
    assert.equal(replica.stats().last_resync_reason, 'behind');
  });

  it('reloads at once when the source is in a new epoch (its store was reset)', async () => {
    const { replica, source } = catalog();
    seed(source, 'a', 'b');
    await replica.start();
    const epoch = replica.epoch;
    source.reset();
    seed(source, 'c');
    assert.equal(await replica.checkVersion(), true);
    await settle();
    assert.notEqual(replica.epoch, epoch);
    assert.equal(replica.version, 1);
    assert.deepEqual(
      replica.values().map((c) => c.code),
      ['c'],
    );
    assert.equal(replica.stats().last_resync_reason, 'epoch');
  });

  it('reloads when a source without epochs went backwards', async () => {
    const { replica, source } = catalog();
    seed(source, 'a', 'b');
    await replica.start();
    const fresh = new MemorySource<Character>();
    source.load = fresh.load.bind(fresh);
    source.version = fresh.version.bind(fresh);
    (source as { state?: unknown }).state = undefined;
    assert.equal(await replica.checkVersion(), true);
    await settle();
    assert.equal(replica.version, 0);
    assert.equal(replica.size, 0);
    assert.equal(replica.stats().last_resync_reason, 'ahead');
  });

  it('shares one load among concurrent resync requests', async () => {
    const { replica, source } = catalog();
    seed(source, 'a');
    await replica.start();
    let loads = 0;
    const gate = deferred();
    const load = source.load.bind(source);
    source.load = async (put) => {
      loads++;
      await gate.promise;
      return load(put);
    };
    const all = Promise.all([replica.resync(), replica.resync(), replica.resync()]);
    gate.resolve();
    await all;
    // The first run, plus at most one follow-up for the requests that came during it.
    assert.ok(loads <= 2, `loads = ${loads}`);
  });

  it('keeps serving the whole old generation while a resync loads, then swaps at once', async () => {
    const { replica, source } = catalog();
    seed(source, 'a', 'b');
    await replica.start();
    const gate = deferred();
    const load = source.load.bind(source);
    source.load = async (put) => {
      const result = await load(put);
      await gate.promise;
      return result;
    };
    source.replace([['id-z', character('z')]]);
    const resync = replica.resync();
    await settle();
    assert.deepEqual(
      replica
        .values()
        .map((c) => c.code)
        .sort(),
      ['a', 'b'],
    );
    gate.resolve();
    await resync;
    assert.deepEqual(
      replica.values().map((c) => c.code),
      ['z'],
    );
  });

  it('retries a failing source with backoff, degraded meanwhile, and recovers', async () => {
    const { replica, source, clock } = catalog({ resyncRetryBaseMs: 100, resyncRetryMaxMs: 1000 });
    seed(source, 'a');
    await replica.start();
    source.failWith = new Error('db down');
    const resync = replica.resync();
    await settle();
    assert.equal(replica.state, 'degraded');
    assert.ok(replica.stats().resync_failures >= 1);
    assert.ok(replica.get('id-a'), 'serve policy keeps answering');
    source.failWith = undefined;
    await clock.advance(2000);
    await resync;
    assert.equal(replica.state, 'ready');
  });

  it('start() waits through a source that is down at boot', async () => {
    const { replica, source, clock } = catalog({ resyncRetryBaseMs: 50 });
    seed(source, 'a');
    source.failWith = new Error('db down');
    let ready = false;
    const started = replica.start().then(() => (ready = true));
    await clock.advance(500);
    assert.equal(ready, false);
    assert.equal(replica.state, 'syncing');
    source.failWith = undefined;
    await clock.advance(20_000);
    await started;
    assert.equal(replica.state, 'ready');
  });
});

describe('ReplicatedCache: bus outages', () => {
  it('goes degraded when the bus drops and resyncs to ready when it returns', async () => {
    const { replica, source, broker, bus, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    broker.disconnect(bus);
    assert.equal(replica.state, 'degraded');
    seed(source, 'b');
    await upsert(publisher, character('b'), 2);
    broker.reconnect(bus);
    await settle();
    await settle();
    assert.equal(replica.state, 'ready');
    assert.equal(replica.version, 2);
    assert.ok(replica.get('id-b'));
    assert.equal(replica.stats().last_resync_reason, 'reconnect');
  });

  it("'refuse' throws REPLICA_UNAVAILABLE while degraded and serves again once ready", async () => {
    const { replica, source, broker, bus } = catalog({ degradedReads: 'refuse' });
    seed(source, 'a');
    await replica.start();
    assert.ok(replica.get('id-a'));
    broker.disconnect(bus);
    assert.throws(
      () => replica.get('id-a'),
      (err) => isCachecastError(err, 'REPLICA_UNAVAILABLE'),
    );
    assert.throws(
      () => replica.values(),
      (err) => isCachecastError(err, 'REPLICA_UNAVAILABLE'),
    );
    broker.reconnect(bus);
    await settle();
    await settle();
    assert.ok(replica.get('id-a'));
  });

  it("'source' makes fetch() ask the source while degraded", async () => {
    const { replica, source, broker, bus } = catalog({ degradedReads: 'source' });
    seed(source, 'a');
    await replica.start();
    broker.disconnect(bus);
    seed(source, 'only-in-source');
    assert.equal(replica.get('id-only-in-source'), undefined);
    assert.equal((await replica.fetch('id-only-in-source'))?.code, 'only-in-source');
    source.failWith = new Error('down too');
    await assert.rejects(replica.fetch('id-a'), (err) => isCachecastError(err, 'SOURCE_FAILED'));
  });
});

describe('ReplicatedCache: indexes', () => {
  it('keeps the match_label index consistent through upsert, delete, refresh and resync', async () => {
    const { replica, source, publisher } = catalog();
    source.set('id-a', character('a', 'plastic'));
    source.set('id-b', character('b', 'paper'));
    await replica.start();
    assert.equal(replica.findOne('match_label', 'plastic')?.code, 'a');
    await upsert(publisher, character('a', 'glass'), 3);
    await settle();
    assert.equal(replica.findOne('match_label', 'plastic'), undefined);
    assert.equal(replica.findOne('match_label', 'glass')?.code, 'a');
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'delete', character_id: 'id-b' }, { version: 4 });
    await settle();
    assert.equal(replica.findOne('match_label', 'paper'), undefined);
    await publishEvent(
      publisher,
      CATALOG_TOPIC,
      { type: 'full_refresh', characters: [character('c', 'can'), character('d', 'can')] },
      { version: 5 },
    );
    await settle();
    assert.deepEqual(
      replica
        .findAll('match_label', 'can')
        .map((c) => c.code)
        .sort(),
      ['c', 'd'],
    );
    assert.equal(replica.findOne('match_label', 'glass'), undefined);
    source.replace([['id-e', character('e', 'vinyl')]]);
    source.replace([['id-e', character('e', 'vinyl')]]);
    source.replace([['id-e', character('e', 'vinyl')]]);
    await replica.resync();
    assert.equal(replica.findOne('match_label', 'can'), undefined);
    assert.equal(replica.findOne('code', 'e')?.match_label, 'vinyl');
    assert.throws(
      () => replica.findOne('nope', 'x'),
      (err) => isCachecastError(err, 'REPLICA_UNKNOWN_INDEX'),
    );
  });
});

describe('ReplicatedCache: events out of order', () => {
  it('holds an event past a gap until the missing one arrives, then applies both in order', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    await upsert(publisher, character('a', 'third'), 3);
    await settle();
    assert.equal(replica.get('id-a')?.match_label, 'label-a', 'v3 waits for v2');
    await upsert(publisher, character('a', 'second'), 2);
    await settle();
    assert.equal(replica.version, 3);
    assert.equal(replica.get('id-a')?.match_label, 'third', 'applied in version order');
    assert.equal(replica.stats().gaps, 0);
    assert.equal(replica.stats().resyncs, 1, 'no resync for a reordering');
  });

  it('applies a commutative change past a gap at once, and only the version waits', async () => {
    const { replica, revoke } = blacklist(new MemorySource<number>());
    await replica.start();
    await revoke('j2', 2);
    await settle();
    assert.equal(replica.has('j2'), true, 'a revocation never waits for another');
    assert.equal(replica.version, 0);
    await revoke('j1', 1);
    await settle();
    assert.equal(replica.version, 2);
    assert.equal(replica.has('j1'), true);
    assert.equal(replica.stats().resyncs, 1);
  });

  it('resyncs when the gap stays open past gapWaitMs, keeping what it applied', async () => {
    const source = new MemorySource<number>();
    const { replica, clock, revoke } = blacklist(source);
    await replica.start();
    source.set('j1', toBlacklistValue(clock.now() / 1000 + 600)); // v1: its event is lost
    source.set('j2', toBlacklistValue(clock.now() / 1000 + 600)); // v2
    await revoke('j2', 2);
    await settle();
    assert.equal(replica.has('j2'), true);
    await clock.advance(200);
    await settle();
    assert.equal(replica.stats().last_resync_reason, 'gap');
    assert.equal(replica.version, 2);
    assert.equal(replica.has('j1'), true, 'the resync brought the lost revocation');
  });

  it('applies commutative events to the serving generation while a resync loads', async () => {
    const inner = new MemorySource<number>();
    const gate = deferred<void>();
    let gated = false;
    const source: SnapshotSource<number> = {
      load: async (put) => {
        if (gated) await gate.promise;
        return inner.load(put);
      },
      version: () => inner.version(),
    };
    const { replica, revoke } = blacklist(source);
    await replica.start();
    gated = true;
    const resync = replica.resync('manual');
    await revoke('during', 1);
    await settle();
    assert.equal(replica.has('during'), true, 'not held back by the snapshot load');
    gate.resolve();
    await resync;
    assert.equal(replica.has('during'), true, 'and kept by the new generation');
    assert.equal(replica.version, 1);
  });
});

describe('ReplicatedCache: TTL entries', () => {
  it('never returns an expired entry and sweeps it out of memory', async () => {
    const source = new MemorySource<number>();
    const { replica, clock, revoke } = blacklist(source, { sweepIntervalMs: 1000 });
    source.set('old', toBlacklistValue(clock.now() / 1000 + 10));
    await replica.start();
    source.set('new', toBlacklistValue(clock.now() / 1000 + 60));
    await revoke('new', 2, 60);
    await settle();
    assert.equal(replica.has('old'), true);
    assert.equal(replica.has('new'), true);
    await clock.advance(10_000);
    assert.equal(replica.has('old'), false, 'expired entries are never returned');
    assert.equal(replica.has('new'), true);
    assert.equal(replica.size, 1, 'the sweep freed the expired entry');
    await clock.advance(60_000);
    assert.equal(replica.has('new'), false);
    assert.equal(replica.size, 0);
  });

  it('skips entries already expired in a snapshot', async () => {
    const source = new MemorySource<number>();
    const { replica, clock } = blacklist(source);
    source.set('gone', toBlacklistValue(clock.now() / 1000 - 1));
    source.set('live', toBlacklistValue(clock.now() / 1000 + 100));
    await replica.start();
    assert.equal(replica.size, 1);
  });
});

describe('ReplicatedCache: malformed events', () => {
  it('rejects and counts bad JSON, bad shapes, unknown types and oversized events, and keeps going', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    await publisher.publish(CATALOG_TOPIC, '{not json');
    await publisher.publish(CATALOG_TOPIC, '[1,2]');
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'explode' });
    await publishEvent(publisher, CATALOG_TOPIC, { type: 'upsert', character: { id: 'x' } });
    await publishEvent(
      publisher,
      CATALOG_TOPIC,
      { type: 'upsert', character: character('v') },
      { version: -1 },
    );
    await publisher.publish(CATALOG_TOPIC, Buffer.alloc(64 * 1024 * 1024 + 1, 32));
    await upsert(publisher, character('ok'), 2);
    await settle();
    const stats = replica.stats();
    assert.equal(stats.events_rejected, 6);
    assert.deepEqual(stats.rejected_by_code, {
      EVENT_BAD_JSON: 1,
      EVENT_BAD_SHAPE: 3,
      EVENT_UNKNOWN_TYPE: 1,
      EVENT_TOO_LARGE: 1,
    });
    assert.equal(replica.version, 2);
    assert.ok(replica.get('id-ok'));
    assert.equal(replica.get('x'), undefined);
    assert.equal(replica.state, 'ready');
  });

  it('with a secret, refuses unsigned and badly signed events', async () => {
    const secret = 'a-secret-of-enough-length';
    const { replica, source, publisher } = catalog({ eventSecret: secret });
    seed(source, 'a');
    await replica.start();
    await upsert(publisher, character('u'), 2);
    await publishEvent(
      publisher,
      CATALOG_TOPIC,
      { type: 'upsert', character: character('w') },
      { version: 2 },
      'wrong-secret-xxxxxxxx',
    );
    await publishEvent(
      publisher,
      CATALOG_TOPIC,
      { type: 'upsert', character: character('s') },
      { version: 2 },
      secret,
    );
    await settle();
    assert.deepEqual(replica.stats().rejected_by_code, { EVENT_UNSIGNED: 1, EVENT_BAD_SIGNATURE: 1 });
    assert.ok(replica.get('id-s'));
    assert.equal(replica.get('id-u'), undefined);
  });
});

describe('ReplicatedCache: lifecycle', () => {
  it('close() is idempotent and stops delivery', async () => {
    const { replica, source, publisher } = catalog();
    seed(source, 'a');
    await replica.start();
    await Promise.all([replica.close(), replica.close()]);
    await replica.close();
    await upsert(publisher, character('late'), 2);
    await settle();
    assert.equal(replica.get('id-late'), undefined);
  });

  it('reports lag from published_at', async () => {
    const { replica, source, publisher, clock } = catalog();
    seed(source, 'a');
    await replica.start();
    await publishEvent(
      publisher,
      CATALOG_TOPIC,
      { type: 'upsert', character: character('b') },
      { version: 2, published_at: clock.now() - 7 },
    );
    await settle();
    assert.equal(replica.stats().lag_ms, 7);
    assert.notEqual(replica.stats().last_event_at, null);
  });
});
