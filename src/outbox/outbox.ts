import type pg from 'pg';

/** NOTIFY channel that wakes relays as soon as an outbox row commits. */
export const OUTBOX_CHANNEL = 'cachecast_outbox';

/**
 * Records an event in the caller's transaction: bumps the dataset's version
 * (the row lock serializes writers, so versions are gapless and in commit
 * order) and inserts the outbox row. The event is published by the relay
 * once the transaction commits, even if this process dies right after.
 * Returns the event's version.
 */
export async function appendToOutbox(
  tx: pg.PoolClient,
  event: { dataset: string; topic: string; payload: Record<string, unknown> },
): Promise<number> {
  const { rows } = await tx.query<{ version: string; epoch: string }>(
    `INSERT INTO cachecast_versions AS v (dataset, version) VALUES ($1, 1)
     ON CONFLICT (dataset) DO UPDATE SET version = v.version + 1
     RETURNING version::text AS version, epoch`,
    [event.dataset],
  );
  const version = Number(rows[0]!.version);
  await tx.query(
    'INSERT INTO cachecast_outbox (dataset, version, epoch, topic, payload) VALUES ($1, $2, $3, $4, $5)',
    [event.dataset, version, rows[0]!.epoch, event.topic, JSON.stringify(event.payload)],
  );
  // Delivered only on commit; a rolled-back write wakes nobody.
  await tx.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, event.dataset]);
  return version;
}
