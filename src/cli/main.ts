import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Presets, SingleBar } from 'cli-progress';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import pg from 'pg';
import { formatCsvIssues, moreCsvErrors, parseCatalogCsv } from '../catalog/csv.ts';
import { CatalogRepository } from '../catalog/repository.ts';
import type { CommonConfig } from '../config/env.ts';
import { intVar, loadCommonConfig } from '../config/env.ts';
import type { ServiceStarter } from '../services/service.ts';
import { publishOutboxNow } from './publish-now.ts';
import { migrate } from '../db/migrate.ts';
import { describeError } from '../errors.ts';
import { redactUrl } from '../util/redact.ts';

export function buildCli(): Command {
  const program = new Command('cachecast')
    .description(
      'In-memory replicas of read-mostly data, kept identical across instances by RabbitMQ fanout events',
    )
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('migrate')
    .description('create or upgrade the database schema (idempotent)')
    .action(() =>
      withDatabase(async (pool, config) => {
        const applied = await migrate(pool);
        out(
          applied.length
            ? `applied migrations ${applied.join(', ')} to ${redactUrl(config.databaseUrl)}`
            : `schema is up to date (${redactUrl(config.databaseUrl)})`,
        );
      }),
    );

  program
    .command('import')
    .description(
      'replace the character catalog with a CSV file and broadcast a full_refresh (all or nothing)',
    )
    .argument('<file.csv>', 'UTF-8 CSV: code,name,match_label,type_label,dialog[,is_default]')
    .option('--dry-run', 'validate only; change nothing')
    .action((file: string, opts: { dryRun?: boolean }) => importCommand(file, opts.dryRun ?? false));

  program
    .command('warmup')
    .description("broadcast a full_refresh of the catalog from the database (the seed's deploy-time warm-up)")
    .action(() =>
      withDatabase(async (pool, config) => {
        await migrate(pool);
        const { version, count } = await new CatalogRepository(pool).warmup();
        const sent = await publishOutboxNow(pool, config.rabbitmqUrl, config.eventSecret, publishTimeout());
        out(`full_refresh of ${count} characters (version ${version}) ${describeSent(sent)}`);
      }),
    );

  program
    .command('serve')
    .description('run one service in the foreground; SIGTERM/SIGINT drain and exit 0')
    .argument('<service>', `one of: ${Object.keys(SERVICES).join(', ')}`)
    .action(async (name: string) => {
      const load = SERVICES[name];
      if (!load)
        throw new CliError(`unknown service "${name}" (one of: ${Object.keys(SERVICES).join(', ')})`);
      const service = await (await load())(process.env);
      // Handlers first: whoever reads the line below may send SIGTERM at once, and must get a drain.
      const stopped = new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          void service.close().then(resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      out(
        `${service.name} running: ${Object.entries(service.endpoints)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')}`,
      );
      await stopped;
    });

  program
    .command('stack')
    .description(
      'run the local stack: migrate, import the sample catalog if empty, start auth, 2 ext-authz, ' +
        'catalog and 2 match workers as supervised processes, and the dashboard (8000); Ctrl-C stops all',
    )
    .option(
      '--port-offset <n>',
      'add n to every port (dashboard 8000, auth 8001, ...; also STACK_PORT_OFFSET)',
      parsePortOffset,
    )
    .option('--verbose', "print every process's log lines (default: warnings and errors)")
    .action(async (opts: { portOffset?: number; verbose?: boolean }) => {
      const { runStackCommand } = await import('../stack/command.ts');
      await runStackCommand(opts);
    });

  return program;
}

function parsePortOffset(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 50_000) {
    throw new InvalidArgumentError('an integer from 0 to 50000');
  }
  return n;
}

/** Each service is loaded only when asked for, so one command does not load the others. */
const SERVICES: Record<string, () => Promise<ServiceStarter>> = {
  auth: async () => (await import('../services/auth/main.ts')).startAuth,
  'ext-authz': async () => (await import('../services/ext-authz/main.ts')).startExtAuthz,
  catalog: async () => (await import('../services/catalog/main.ts')).startCatalog,
  'match-worker': async () => (await import('../services/match-worker/main.ts')).startMatchWorker,
};

/** A usage problem: one line, exit 1, no stack. */
class CliError extends Error {}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** How long a CLI command tries to broadcast what it committed (CACHECAST_PUBLISH_TIMEOUT_MS). */
function publishTimeout(): number {
  return intVar(process.env, 'CACHECAST_PUBLISH_TIMEOUT_MS', 10_000, 100, 600_000);
}

function describeSent(sent: { published: boolean; detail: string }): string {
  return sent.published
    ? `broadcast (${sent.detail})`
    : `committed; not broadcast yet (${sent.detail}): a running catalog service publishes it from the outbox`;
}

async function withDatabase(work: (pool: pg.Pool, config: CommonConfig) => Promise<void>): Promise<void> {
  const config = loadCommonConfig();
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 2 });
  pool.on('error', () => undefined);
  try {
    await work(pool, config);
  } finally {
    await pool.end();
  }
}

async function importCommand(file: string, dryRun: boolean): Promise<void> {
  let input: Buffer;
  try {
    input = await readFile(file);
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? describeError(err)}`);
  }
  const bar = process.stderr.isTTY && input.length > 1_000_000 ? progressBar(input.length) : undefined;
  const parsed = parseCatalogCsv(input, { onProgress: (_rows, bytes) => bar?.update(bytes) });
  bar?.stop();
  if (!parsed.ok) {
    // The parser keeps the first MAX_CSV_ERRORS and counts the rest, as the admin API lists them.
    const more = moreCsvErrors(parsed);
    process.stderr.write(`${formatCsvIssues(parsed.errors, basename(file))}\n${more ? `${more}\n` : ''}`);
    throw new CliError(`${parsed.errorCount} error(s) in ${basename(file)}; nothing was imported`);
  }
  if (dryRun) {
    out(`${basename(file)}: ${parsed.rows.length} characters, valid; nothing changed (--dry-run)`);
    return;
  }
  await withDatabase(async (pool, config) => {
    await migrate(pool);
    const result = await new CatalogRepository(pool).replaceAll(parsed.rows);
    const sent = await publishOutboxNow(pool, config.rabbitmqUrl, config.eventSecret, publishTimeout());
    out(
      `imported ${result.total} characters (${result.inserted} new, ${result.updated} updated, ${result.deleted} removed); ` +
        `full_refresh version ${result.version} ${describeSent(sent)}`,
    );
  });
}

function progressBar(total: number): SingleBar {
  const bar = new SingleBar(
    { format: 'validating {bar} {percentage}% | {value}/{total} bytes', stream: process.stderr },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return bar;
}

/** Runs the CLI; errors are one line on stderr and a non-zero exit. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`cachecast: ${err instanceof CliError ? err.message : describeError(err)}\n`);
    return 1;
  }
}
