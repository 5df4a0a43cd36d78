import { Command, CommanderError } from 'commander';
import pg from 'pg';
import { loadCommonConfig } from '../config/env.ts';
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
    .action(async () => {
      const config = loadCommonConfig();
      const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 1 });
      try {
        const applied = await migrate(pool);
        process.stdout.write(
          applied.length
            ? `applied migrations ${applied.join(', ')} to ${redactUrl(config.databaseUrl)}\n`
            : `schema is up to date (${redactUrl(config.databaseUrl)})\n`,
        );
      } finally {
        await pool.end();
      }
    });

  return program;
}

/** Runs the CLI; errors are one line on stderr and a non-zero exit. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    process.stderr.write(`cachecast: ${describeError(err)}\n`);
    return 1;
  }
}
