// Import: a 100,000-row catalog CSV, validated and written in one transaction
// with its full_refresh event (CatalogRepository.replaceAll), as
// `cachecast import` does. Baseline: the same rows inserted one statement at
// a time in one transaction (an ORM-style loop). Ceiling: one bulk INSERT of
// the same rows into an unindexed table (no upsert, no event, no indexes).
import { parseCatalogCsv } from '../src/catalog/csv.ts';
import { CatalogRepository } from '../src/catalog/repository.ts';
import { withTransaction } from '../src/db/transaction.ts';
import { bigCatalogCsv } from '../test/support/big-csv.ts';
import { testDatabase } from '../test/support/env.ts';
import { elapsedMs, fmt, fmtCount, nowNs, printRows, row, writeResult } from './lib.ts';

const ROWS = Number(process.env.BENCH_IMPORT_ROWS ?? 100_000);
// A migrated schema of its own, dropped afterwards.
const db = await testDatabase();
const { pool } = db;
try {
  const csv = bigCatalogCsv(ROWS);

  let t = nowNs();
  const parsed = parseCatalogCsv(csv);
  const parseMs = elapsedMs(t);
  if (!parsed.ok) throw new Error('the generated CSV is invalid');
  const rows = parsed.rows;

  t = nowNs();
  const result = await new CatalogRepository(pool).replaceAll(rows);
  const importMs = elapsedMs(t);
  if (result.total !== ROWS) throw new Error(`imported ${result.total}`);
  const { rows: outbox } = await pool.query<{ bytes: number }>(
    'SELECT length(payload) AS bytes FROM cachecast_outbox ORDER BY version DESC LIMIT 1',
  );

  t = nowNs();
  const again = await new CatalogRepository(pool).replaceAll(rows);
  const reimportMs = elapsedMs(t);
  if (again.updated !== ROWS) throw new Error('re-import did not update every row');

  await pool.query(
    'CREATE TABLE plain_rows (code text, name text, match_label text, type_label text, dialog text, is_default boolean)',
  );
  t = nowNs();
  await pool.query(
    `INSERT INTO plain_rows SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[])`,
    [
      rows.map((r) => r.code),
      rows.map((r) => r.name),
      rows.map((r) => r.match_label),
      rows.map((r) => r.type_label),
      rows.map((r) => r.dialog),
      rows.map((r) => r.is_default),
    ],
  );
  const ceilingMs = elapsedMs(t);

  await pool.query('CREATE TABLE loop_rows (LIKE characters INCLUDING ALL)');
  t = nowNs();
  await withTransaction(pool, async (tx) => {
    for (const r of rows) {
      await tx.query(
        `INSERT INTO loop_rows (id, code, name, match_label, type_label, dialog, is_default)
         VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6)`,
        [r.code, r.name, r.match_label, r.type_label, r.dialog, r.is_default],
      );
    }
  });
  const loopMs = elapsedMs(t);

  const baseline = { label: 'one INSERT per row, one transaction', value: loopMs };
  const ceiling = { label: 'one bulk INSERT into an unindexed table', value: ceilingMs };
  const figures = [
    row(`validate ${ROWS} rows (parseCatalogCsv, ${fmt(csv.length / 1e6)} MB)`, parseMs, 'ms'),
    row(`import ${ROWS} new rows + full_refresh event, one transaction`, importMs, 'ms', {
      baseline,
      ceiling,
      headline: `import ${fmtCount(ROWS)} CSV rows + full_refresh, one transaction`,
      note: `full_refresh body ${fmt(outbox[0]!.bytes / 1e6)} MB`,
    }),
    row(`re-import ${ROWS} rows (all updated)`, reimportMs, 'ms', { baseline, ceiling }),
  ];
  printRows(`import (${ROWS} rows)`, figures);
  writeResult('import', figures);
} finally {
  await db.drop();
}
