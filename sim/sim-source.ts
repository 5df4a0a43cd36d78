import { CachecastError } from '../src/errors.ts';
import type { Dataset } from '../src/replica/dataset.ts';
import type { SnapshotResult, SnapshotSource, SourceChanges, SourceState } from '../src/replica/source.ts';
import { MemorySource } from '../src/sources/memory-source.ts';
import type { Rng } from './rng.ts';
import type { Scheduler } from './scheduler.ts';

/**
 * The source of truth on virtual time: a MemorySource (epoch, digest, change
 * log) behind reads that take time and can fail. `atomic` loads read data
 * and version together (PostgreSQL); the others read the version first and
 * the data after, as the Redis SCAN does.
 */
export class SimSource<V> implements SnapshotSource<V> {
  readonly mem: MemorySource<V>;
  readonly digestAlgorithm;
  /** Every read fails (the source is unreachable). */
  down = false;
  reads = 0;

  constructor(
    private readonly scheduler: Scheduler,
    private readonly rng: Rng,
    dataset: Dataset<V>,
    private readonly atomic: boolean,
  ) {
    this.mem = new MemorySource<V>({ dataset, logSize: 200 });
    this.digestAlgorithm = this.mem.digestAlgorithm;
  }

  #after<T>(ms: number, read: () => T | Promise<T>): Promise<T> {
    this.reads++;
    return new Promise((resolve, reject) => {
      this.scheduler.setTimeout(() => {
        if (this.down) return reject(new CachecastError('SOURCE_FAILED', 'source unreachable'));
        Promise.resolve(read()).then(resolve, reject);
      }, ms);
    });
  }

  load(put: (key: string, value: V) => void): Promise<SnapshotResult> {
    const before = { epoch: this.mem.epoch, version: this.mem.currentVersion };
    return this.#after(this.rng.int(5, 150), async () => {
      const result = await this.mem.load(put);
      if (this.atomic) return result;
      if (result.epoch !== before.epoch)
        throw new CachecastError('SOURCE_FAILED', 'source reset during the load');
      // The data is as of the end; the version as of the start; the digest and the
      // changes made meanwhile (from the log) are read last, as the Redis source does.
      const log = await this.mem.changesSince(before.epoch, before.version, 0);
      if (!log) throw new CachecastError('SOURCE_FAILED', 'the log does not reach back');
      return { ...result, version: before.version, changes: log.changes };
    });
  }

  version(): Promise<number> {
    return this.#after(this.rng.int(1, 4), () => this.mem.currentVersion);
  }

  state(fromBucket: number): Promise<SourceState> {
    return this.#after(this.rng.int(1, 4), () => this.mem.state(fromBucket));
  }

  changesSince(epoch: string, version: number, fromBucket: number): Promise<SourceChanges | undefined> {
    return this.#after(this.rng.int(1, 6), () => this.mem.changesSince(epoch, version, fromBucket));
  }

  get(key: string): Promise<V | undefined> {
    return this.#after(this.rng.int(1, 4), () => this.mem.entries.get(key));
  }
}
