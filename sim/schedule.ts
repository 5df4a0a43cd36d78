import type { Rng } from './rng.ts';

/** The faults a schedule can hold; each is counted in the simulator's summary. */
export const FAULT_KINDS = [
  'drop',
  'duplicate',
  'reorder',
  'delay',
  'partition',
  'source_restart',
  'forged',
  'replica_restart',
  'snapshot_failure',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export type Fault =
  /** The next data event (or heartbeat) routed at or after `at` is lost for one queue, or for all. */
  | { kind: 'drop'; at: number; replica: number | 'all'; heartbeat: boolean }
  | { kind: 'duplicate'; at: number; lateMs: number }
  /** The next event arrives `lateMs` late: the ones after it overtake it. */
  | { kind: 'reorder'; at: number; lateMs: number }
  | { kind: 'delay'; at: number; lateMs: number }
  /** A replica's or a writer's link cut for `ms` (a replica's queue may be lost with it). */
  | { kind: 'partition'; at: number; ms: number; replica?: number; writer?: number; losesQueue: boolean }
  /** The source restarts empty: a new epoch, version 0, its pending events gone. */
  | { kind: 'source_restart'; at: number }
  | {
      kind: 'forged';
      at: number;
      forgery: Forgery;
    }
  | { kind: 'replica_restart'; at: number; replica: number; downMs: number }
  /** The source's reads (loads, checks, its log) fail for `ms`; writes wait. */
  | { kind: 'snapshot_failure'; at: number; ms: number };

export type DatasetKind = 'blacklist' | 'catalog';

/** What a forger publishes: the next version, one far ahead, an unversioned change, an empty full refresh, a new epoch. */
export type Forgery = 'next-version' | 'far-version' | 'unversioned' | 'empty-refresh' | 'new-epoch';

export interface Schedule {
  dataset: DatasetKind;
  writers: number;
  replicas: number;
  /** Writes every this many ms per writer, on average. */
  writeEveryMs: number;
  /** Faults happen in [warmupMs, faultEndMs]; then the world settles with writes going on, then goes quiet. */
  warmupMs: number;
  faultEndMs: number;
  settleEndMs: number;
  endMs: number;
  faults: Fault[];
}

/** A schedule from its seed: a few faults of random kinds at random times. */
export function makeSchedule(rng: Rng, index: number): Schedule {
  const dataset: DatasetKind = index % 2 === 0 ? 'blacklist' : 'catalog';
  const replicas = rng.int(2, 3);
  const writers = rng.int(2, 3);
  const warmupMs = 500;
  const faultEndMs = rng.int(3000, 6000);
  const faults: Fault[] = [];
  const count = rng.int(1, 8);
  for (let i = 0; i < count; i++) {
    const at = rng.int(warmupMs, faultEndMs - 200);
    const room = faultEndMs - at;
    const kind = rng.pick(FAULT_KINDS);
    switch (kind) {
      case 'drop':
        faults.push({
          kind,
          at,
          replica: rng.chance(0.5) ? 'all' : rng.int(0, replicas - 1),
          heartbeat: rng.chance(0.2),
        });
        break;
      case 'duplicate':
        faults.push({ kind, at, lateMs: rng.int(0, 400) });
        break;
      case 'reorder':
        faults.push({ kind, at, lateMs: rng.int(20, 150) });
        break;
      case 'delay':
        faults.push({ kind, at, lateMs: rng.int(300, 2000) });
        break;
      case 'partition': {
        const ms = Math.min(room, rng.int(100, 2500));
        if (rng.chance(0.5)) {
          faults.push({ kind, at, ms, replica: rng.int(0, replicas - 1), losesQueue: rng.chance(0.4) });
        } else {
          faults.push({ kind, at, ms, writer: rng.int(0, writers - 1), losesQueue: false });
        }
        break;
      }
      case 'source_restart':
        faults.push({ kind, at });
        break;
      case 'forged': {
        const forgeries = ['next-version', 'far-version', 'unversioned', 'new-epoch'] as const;
        const forgery = dataset === 'catalog' && rng.chance(0.25) ? 'empty-refresh' : rng.pick(forgeries);
        faults.push({ kind, at, forgery });
        break;
      }
      case 'replica_restart':
        faults.push({
          kind,
          at,
          replica: rng.int(0, replicas - 1),
          downMs: Math.min(room, rng.int(0, 1500)),
        });
        break;
      case 'snapshot_failure':
        faults.push({ kind, at, ms: Math.min(room, rng.int(100, 1500)) });
        break;
    }
  }
  faults.sort((a, b) => a.at - b.at);
  const settleEndMs = faultEndMs + 4000;
  return {
    dataset,
    writers,
    replicas,
    writeEveryMs: rng.int(20, 120),
    warmupMs,
    faultEndMs,
    settleEndMs,
    endMs: settleEndMs + 1500,
    faults,
  };
}

/** A compact, human-readable line per fault (the smallest failing schedule is printed this way). */
export function describeFault(fault: Fault): string {
  const { kind, at, ...rest } = fault;
  const detail = Object.entries(rest)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
  return `${at} ms ${kind}${detail ? ` ${detail}` : ''}`;
}
