// Runs every test file, listed explicitly (Node 20's runner expands no globs
// and passes with zero tests), and fails when a file is missing from the list,
// missing on disk, or ran no test.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ensureVhost } from './rabbit-vhost.mjs';

export const TEST_FILES = [
  'test/unit/errors-and-config.test.ts',
  'test/unit/amqp.test.ts',
  'test/unit/lifecycle.test.ts',
  'test/unit/codec.test.ts',
  'test/unit/datasets.test.ts',
  'test/unit/replica.test.ts',
  'test/unit/replica-protocol.test.ts',
  'test/unit/store.test.ts',
  'test/unit/outbox-drainer.test.ts',
  'test/unit/catalog-csv.test.ts',
  'test/unit/jwt.test.ts',
  'test/unit/jwt-fuzz.test.ts',
  'test/unit/cache-breaker.test.ts',
  'test/unit/cache-keys.test.ts',
  'test/unit/user-collections.test.ts',
  'test/unit/stack.test.ts',
  'test/unit/import-graph.test.ts',
  'test/unit/h2-hpack.test.ts',
  'test/unit/dashboard-page.test.ts',
  'test/sim/simulator.test.ts',
  'test/conformance/bus-memory.test.ts',
  'test/conformance/bus-rabbitmq.test.ts',
  'test/conformance/source-memory.test.ts',
  'test/conformance/source-postgres.test.ts',
  'test/conformance/source-redis.test.ts',
  'test/integration/outbox.test.ts',
  'test/integration/replica-rabbitmq.test.ts',
  'test/integration/admin-server.test.ts',
  'test/integration/redis-client.test.ts',
  'test/integration/cli.test.ts',
  'test/integration/catalog-service.test.ts',
  'test/integration/grants-writer.test.ts',
  'test/integration/match-worker.test.ts',
  'test/integration/match-worker-limits.test.ts',
  'test/integration/auth-revocations.test.ts',
  'test/integration/ext-authz.test.ts',
  'test/integration/h2-server.test.ts',
  'test/integration/ext-authz-grpc-edges.test.ts',
  'test/integration/cache-aside.test.ts',
  'test/integration/cache-alerts.test.ts',
  'test/integration/cache-catalog.test.ts',
  'test/integration/deploy-manifests.test.ts',
  'test/integration/rabbitmq-permissions.test.ts',
  'test/integration/stack.test.ts',
  'test/integration/shutdown.test.ts',
  'test/integration/dashboard-browser.test.ts',
  'test/integration/nginx-config.test.ts',
  'test/integration/nginx-authz.test.ts',
  'test/faults/connection-cut.test.ts',
  'test/faults/broker-restart.test.ts',
  'test/faults/crash-after-commit.test.ts',
  'test/faults/match-worker-kill.test.ts',
  'test/faults/catalog-fleet.test.ts',
  'test/faults/ext-authz-faults.test.ts',
  'test/faults/sync-protocol.test.ts',
  'test/faults/cache-redis-outage.test.ts',
  'test/cluster/redis-sentinel.test.ts',
  'test/cluster/rabbit-cluster.test.ts',
];

const root = join(import.meta.dirname, '..');
const onDisk = [];
(function walk(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else if (entry.name.endsWith('.test.ts')) onDisk.push(relative(root, path));
  }
})(join(root, 'test'));

const problems = [];
for (const file of onDisk)
  if (!TEST_FILES.includes(file)) problems.push(`${file} is not listed in scripts/run-tests.mjs`);
for (const file of TEST_FILES)
  if (!existsSync(join(root, file))) problems.push(`${file} is listed but does not exist`);

const only = process.argv.slice(2);
const files = only.length ? only : TEST_FILES;
if (problems.length && !only.length) {
  for (const p of problems) console.error(`test list: ${p}`);
  process.exit(1);
}

// The tests get a RabbitMQ vhost and a Redis database of their own, so they
// neither disturb nor read a stack running on the same services (`npm start`
// uses the contract defaults: vhost / and Redis DB 0). Set RABBITMQ_URL or
// REDIS_URL to choose others.
const testEnv = { NODE_ENV: 'test' };
if (!process.env.REDIS_URL) testEnv.REDIS_URL = 'redis://127.0.0.1:6379/1';
if (!process.env.RABBITMQ_URL) {
  const url = ensureVhost('cachecast-test');
  if (url) testEnv.RABBITMQ_URL = url;
}

const resultsDir = join(root, '.test-results');
mkdirSync(resultsDir, { recursive: true });

// One runner process per file: the per-file count is then exact, even for
// suites defined in a shared module (test/conformance/*.conformance.ts).
let passed = 0;
let failed = 0;
let skipped = 0;
let runnerFailed = false;
for (const [i, file] of files.entries()) {
  const countsFile = join(resultsDir, `counts-${i}.json`);
  rmSync(countsFile, { force: true });
  console.log(`\n# ${file}`);
  const run = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      // A test that waits on a promise nothing settles fails, with its name, instead of
      // stalling the run (one such hang was seen once in catalog-service under heavy load).
      '--test-timeout=600000',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=./test/support/count-reporter.mjs',
      `--test-reporter-destination=${countsFile}`,
      file,
    ],
    { cwd: root, stdio: 'inherit', env: { ...process.env, ...testEnv } },
  );
  if (run.status !== 0) runnerFailed = true;
  let c = { passed: 0, failed: 0, skipped: 0 };
  try {
    c = JSON.parse(readFileSync(countsFile, 'utf8'));
  } catch {
    problems.push(`${file}: the runner wrote no counts`);
  }
  passed += c.passed;
  failed += c.failed;
  skipped += c.skipped;
  if (c.passed + c.failed === 0) problems.push(`${file} ran no test`);
  else if (run.status !== 0 && c.failed === 0) problems.push(`${file}: the runner exited ${run.status}`);
}
for (const p of problems) console.error(`test list: ${p}`);
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(runnerFailed || failed > 0 || problems.length > 0 ? 1 : 0);
