import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isCachecastError } from '../../src/errors.ts';
import { Lifecycle } from '../../src/util/lifecycle.ts';
import { FakeClock } from '../support/fake-clock.ts';

function recorder(): {
  closed: string[];
  errors: Array<[string, unknown]>;
  lifecycle: (clock?: FakeClock) => Lifecycle;
} {
  const closed: string[] = [];
  const errors: Array<[string, unknown]> = [];
  return {
    closed,
    errors,
    lifecycle: (clock) =>
      new Lifecycle({ onCloseError: (part, err) => errors.push([part, err]), partTimeoutMs: 1000, clock }),
  };
}

/** A close that records its part and resolves. */
function mark(closed: string[], part: string): () => Promise<void> {
  return () => {
    closed.push(part);
    return Promise.resolve();
  };
}

describe('Lifecycle', () => {
  it('closes the parts in reverse of the order they were added, outer parts last', async () => {
    const { closed, lifecycle } = recorder();
    const life = lifecycle();
    life.add('pool', mark(closed, 'pool'));
    life.addOuter('admin', mark(closed, 'admin'));
    life.add('bus', mark(closed, 'bus'));
    life.add('http', mark(closed, 'http'));
    await life.close();
    assert.deepEqual(closed, ['http', 'bus', 'pool', 'admin']);
  });

  it('closes once however often close() is called', async () => {
    const { closed, lifecycle } = recorder();
    const life = lifecycle();
    life.add('bus', mark(closed, 'bus'));
    const first = life.close();
    const second = life.close();
    assert.equal(first, second);
    await Promise.all([first, second, life.close()]);
    assert.deepEqual(closed, ['bus']);
    assert.equal(life.closing, true);
  });

  it('reports a failing part and still closes the rest', async () => {
    const { closed, errors, lifecycle } = recorder();
    const life = lifecycle();
    life.add('pool', mark(closed, 'pool'));
    life.add('bus', () => Promise.reject(new Error('bus refused')));
    life.add('sync', () => {
      throw new Error('thrown at once');
    });
    life.add('http', mark(closed, 'http'));
    await life.close();
    assert.deepEqual(closed, ['http', 'pool']);
    assert.deepEqual(
      errors.map(([part, err]) => [part, (err as Error).message]),
      [
        ['sync', 'thrown at once'],
        ['bus', 'bus refused'],
      ],
    );
  });

  it('bounds a part that hangs, then closes the rest', async () => {
    const clock = new FakeClock();
    const { closed, errors, lifecycle } = recorder();
    const life = lifecycle(clock);
    life.add('pool', mark(closed, 'pool'));
    life.add('stuck', () => new Promise<void>(() => undefined));
    life.add('slow', () => new Promise<void>(() => undefined), { timeoutMs: 5000 });
    let done = false;
    const closing = life.close().then(() => (done = true));
    await clock.advance(4999);
    assert.equal(done, false);
    await clock.advance(1);
    assert.deepEqual(closed, []);
    await clock.advance(1000);
    await closing;
    assert.deepEqual(closed, ['pool']);
    assert.deepEqual(
      errors.map(([part]) => part),
      ['slow', 'stuck'],
    );
    assert.ok(errors.every(([, err]) => isCachecastError(err, 'CLOSE_TIMEOUT')));
    assert.equal(clock.pendingTimers, 0);
  });

  it('closes at once a part added after close()', async () => {
    const { closed, lifecycle } = recorder();
    const life = lifecycle();
    await life.close();
    life.add('late', mark(closed, 'late'));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(closed, ['late']);
  });

  it('checks its bounds', () => {
    assert.throws(() => new Lifecycle({ onCloseError: () => undefined, partTimeoutMs: 0 }), {
      code: 'OPTION_RANGE',
    });
    const life = new Lifecycle({ onCloseError: () => undefined });
    assert.throws(() => life.add('x', () => Promise.resolve(), { timeoutMs: -1 }), { code: 'OPTION_RANGE' });
  });
});
