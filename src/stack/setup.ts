import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { formatCsvIssues, parseCatalogCsv } from '../catalog/csv.ts';
import { CatalogRepository } from '../catalog/repository.ts';
import { CATALOG_DATASET } from '../datasets/catalog.ts';
import { migrate } from '../db/migrate.ts';
import { CachecastError } from '../errors.ts';

/** data/sample-catalog.csv in this package (from src/stack or dist/stack). */
export const SAMPLE_CATALOG = fileURLToPath(new URL('../../data/sample-catalog.csv', import.meta.url));

export interface SetupResult {
  /** Migrations applied now (empty when the schema was up to date). */
  migrations: number[];
  /** Characters in the catalog once set up. */
  characters: number;
  /** The sample catalog was imported (the catalog was empty). */
  imported: boolean;
}

/**
 * What the stack does before it starts any service: apply the migrations, and
 * import the sample catalog when the database has none (as `cachecast import`:
 * the whole file validated, then one transaction with its full_refresh in the
 * outbox, which the catalog service's relay publishes once it runs).
 */
export async function setupDatabase(pool: pg.Pool, sampleFile = SAMPLE_CATALOG): Promise<SetupResult> {
  const migrations = await migrate(pool);
  const repository = new CatalogRepository(pool);
  const existing = await repository.count();
  if (existing > 0) return { migrations, characters: existing, imported: false };
  let input: Buffer;
  try {
    input = await readFile(sampleFile);
  } catch (err) {
    throw new CachecastError(
      'CONFIG_INVALID',
      `the catalog is empty and the sample ${sampleFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const parsed = parseCatalogCsv(input);
  if (!parsed.ok) {
    throw new CachecastError(
      'CONFIG_INVALID',
      `the sample catalog is invalid: ${formatCsvIssues(parsed.errors.slice(0, 5), basename(sampleFile)).replace(/\n/g, '; ')}`,
    );
  }
  const result = await repository.replaceAll(parsed.rows);
  return { migrations, characters: result.total, imported: true };
}

/** The catalog dataset's current version in the source of truth (0 before any change). */
export async function catalogVersion(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ version: string }>(
    'SELECT version::text AS version FROM cachecast_versions WHERE dataset = $1',
    [CATALOG_DATASET],
  );
  return rows[0] ? Number(rows[0].version) : 0;
}
