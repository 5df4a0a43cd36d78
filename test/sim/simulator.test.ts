// The fault simulator in CI: the protocol holds through a fixed set of seeded
// schedules, and every known defect put back (a mutant) is caught.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { PROTOCOL_MUTANTS } from '../../src/replica/options.ts';
import { FAULT_KINDS } from '../../sim/schedule.ts';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '../..');
const SIM = join(ROOT, 'sim/run.ts');

interface Summary {
  schedules: number;
  seed: number;
  violations: number;
  faults: Record<string, number>;
  max_staleness_ms: number;
}

async function sim(...args: string[]): Promise<{ code: number; summary: Summary; stderr: string }> {
  const result = await run(process.execPath, ['--import', 'tsx', SIM, '--quiet', ...args], {
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({
      code: err.code,
      stdout: err.stdout,
      stderr: err.stderr,
    }),
  );
  const last = result.stdout.trim().split('\n').at(-1) ?? '';
  return { code: result.code, summary: JSON.parse(last) as Summary, stderr: result.stderr };
}

describe('the fault simulator', () => {
  it('finds no violation in 600 schedules of every fault kind', async () => {
    const { code, summary, stderr } = await sim('--schedules', '600', '--seed', '2026');
    assert.equal(code, 0, stderr);
    assert.equal(summary.violations, 0);
    assert.equal(summary.schedules, 600);
    for (const kind of FAULT_KINDS) {
      assert.ok(summary.faults[kind]! > 50, `${kind} faults were injected (${summary.faults[kind]})`);
    }
    assert.ok(summary.max_staleness_ms <= 1000, `a ready replica was ${summary.max_staleness_ms} ms behind`);
  });

  it('passes the schedule that found the early-unproven defect (seed 90417, schedule 180)', async () => {
    const { code, summary, stderr } = await sim('--seed', '90417', '--replay', '180');
    assert.equal(code, 0, stderr);
    assert.equal(summary.violations, 0);
    assert.ok(summary.faults.forged! > 0 && summary.faults.snapshot_failure! > 0);
  });

  // The seed each mutant is searched with: 2026, but for a defect that needs a rarer schedule
  // (a forgery far ahead, the gap filled before its timer, then a source outage), the seed that found it.
  const seedOf = (mutant: string): string => (mutant === 'early-unproven' ? '90417' : '2026');
  for (const mutant of PROTOCOL_MUTANTS) {
    it(`catches the ${mutant} mutant within 2,000 schedules, and prints how to replay it`, async () => {
      const seed = seedOf(mutant);
      const { code, summary, stderr } = await sim('--schedules', '2000', '--seed', seed, '--mutant', mutant);
      assert.equal(code, 1);
      assert.ok(summary.violations > 0);
      assert.ok(summary.schedules <= 2000);
      assert.match(stderr, /smallest failing schedule/);
      assert.match(
        stderr,
        new RegExp(`replay: npm run sim -- --seed ${seed} --replay \\d+ --faults [\\d,]* --mutant ${mutant}`),
      );
    });
  }

  it('is deterministic: the same seed gives the same run', async () => {
    const [a, b] = await Promise.all([
      sim('--schedules', '40', '--seed', '7'),
      sim('--schedules', '40', '--seed', '7'),
    ]);
    assert.deepEqual(a.summary, b.summary);
    assert.equal(a.summary.schedules, 40);
  });

  it('refuses bad arguments with one clear line', async () => {
    const { code, stderr } = await run(process.execPath, ['--import', 'tsx', SIM, '--mutant', 'nope'], {
      cwd: ROOT,
    }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(code, 2);
    assert.match(
      stderr,
      /^sim: --mutant must be one of buffer-order, no-epoch, version-only-check, no-heartbeat, early-unproven\n$/,
    );
  });
});
