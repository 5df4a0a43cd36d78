// The deterministic fault simulator: the real replica code (sequencer, resync,
// freshness, expiry) on virtual time, against a simulated bus and source that
// a seeded scheduler controls. See docs/design.md ("The fault simulator").
//
//   npm run sim -- --schedules 500 --seed 7
//   npm run sim -- --schedules 2000 --seed 7 --mutant no-epoch   (must find a violation)
//   npm run sim -- --seed 7 --replay 12 --faults 0,3             (one schedule, some of its faults)
//
// Prints one JSON line last:
// {"schedules","seed","violations","faults":{...},"max_staleness_ms"}; exits 1 on a violation.
import { parseArgs } from 'node:util';
import type { ProtocolMutant } from '../src/replica/options.ts';
import { PROTOCOL_MUTANTS } from '../src/replica/options.ts';
import { Rng, scheduleSeed } from './rng.ts';
import type { FaultKind, Schedule } from './schedule.ts';
import { describeFault, FAULT_KINDS, makeSchedule } from './schedule.ts';
import type { RunResult } from './world.ts';
import { World } from './world.ts';

function fail(message: string): never {
  console.error(`sim: ${message}`);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    schedules: { type: 'string', default: '200' },
    seed: { type: 'string' },
    mutant: { type: 'string' },
    replay: { type: 'string' },
    faults: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});
const count = Number(values.schedules);
if (!Number.isSafeInteger(count) || count < 1) fail('--schedules must be a positive integer');
const seed = values.seed === undefined ? Date.now() % 1_000_000 : Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) fail('--seed must be a non-negative integer');
const mutant = values.mutant as ProtocolMutant | undefined;
if (mutant !== undefined && !PROTOCOL_MUTANTS.includes(mutant)) {
  fail(`--mutant must be one of ${PROTOCOL_MUTANTS.join(', ')}`);
}
const replay = values.replay === undefined ? undefined : Number(values.replay);
if (replay !== undefined && (!Number.isSafeInteger(replay) || replay < 0))
  fail('--replay must be a schedule index');
const keep = values.faults === undefined ? undefined : values.faults.split(',').filter(Boolean).map(Number);
if (keep?.some((i) => !Number.isSafeInteger(i) || i < 0)) fail('--faults must list fault indexes');

function schedule(index: number, only?: number[]): Schedule {
  const full = makeSchedule(new Rng(scheduleSeed(seed, index)), index);
  return only ? { ...full, faults: full.faults.filter((_, i) => only.includes(i)) } : full;
}

function run(index: number, only?: number[]): Promise<RunResult> {
  return new World(schedule(index, only), scheduleSeed(seed, index) ^ 0x5bd1e995, mutant).run();
}

/** Removes faults one at a time while the schedule still fails: the smallest failing schedule. */
async function shrink(index: number, initial: number[]): Promise<{ faults: number[]; result: RunResult }> {
  let faults = initial;
  let result = await run(index, faults);
  for (let i = faults.length - 1; i >= 0; i--) {
    const fewer = faults.filter((_, j) => j !== i);
    const attempt = await run(index, fewer);
    if (attempt.violations.length > 0) {
      faults = fewer;
      result = attempt;
    }
  }
  return { faults, result };
}

const totals = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
let maxStaleness = 0;
let violations = 0;
let ran = 0;
const indexes = replay === undefined ? Array.from({ length: count }, (_, i) => i) : [replay];
const started = Date.now();
for (const index of indexes) {
  const result = await run(index, replay !== undefined ? keep : undefined);
  ran++;
  for (const [kind, n] of Object.entries(result.faults)) totals[kind as FaultKind] += n;
  maxStaleness = Math.max(maxStaleness, result.maxStalenessMs);
  if (result.violations.length === 0) continue;
  violations += result.violations.length;
  const all = schedule(index, replay !== undefined ? keep : undefined).faults.map((_, i) => i);
  // A replay of given faults is shown as it is; anything else is shrunk first.
  const { faults, result: smallest } =
    replay !== undefined && keep ? { faults: keep, result } : await shrink(index, all);
  const s = schedule(index);
  console.error(
    `sim: schedule ${index} (seed ${seed}${mutant ? `, mutant ${mutant}` : ''}) violates the protocol.`,
  );
  console.error(
    `smallest failing schedule: ${s.dataset}, ${s.writers} writers, ${s.replicas} replicas, a write every ~${s.writeEveryMs} ms per writer, faults until ${s.faultEndMs} ms:`,
  );
  for (const i of faults) console.error(`  [${i}] ${describeFault(s.faults[i]!)}`);
  if (faults.length === 0) console.error('  (no fault at all)');
  for (const v of smallest.violations.slice(0, 5)) console.error(`  violation: ${v}`);
  console.error(
    `replay: npm run sim -- --seed ${seed} --replay ${index} --faults ${faults.join(',')}${mutant ? ` --mutant ${mutant}` : ''}`,
  );
  break;
}
if (!values.quiet) console.error(`sim: ${ran} schedules in ${((Date.now() - started) / 1000).toFixed(1)} s`);
console.log(
  JSON.stringify({ schedules: ran, seed, violations, faults: totals, max_staleness_ms: maxStaleness }),
);
process.exit(violations > 0 ? 1 : 0);
