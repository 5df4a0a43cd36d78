/**
 * Schema, applied in order, each once, each in its own transaction.
 * Append only: never edit a migration that has shipped.
 */
export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export const migrations: readonly Migration[] = [
  {
    id: 1,
    name: 'dataset versions and the outbox',
    sql: `
      -- One row per dataset; the row lock serializes writers, so versions are
      -- gapless and in commit order (a sequence would be neither).
      CREATE TABLE cachecast_versions (
        dataset text PRIMARY KEY,
        version bigint NOT NULL DEFAULT 0
      );
      CREATE TABLE cachecast_outbox (
        id bigserial PRIMARY KEY,
        dataset text NOT NULL,
        version bigint NOT NULL,
        topic text NOT NULL,
        payload text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        sent_at timestamptz,
        UNIQUE (dataset, version)
      );
      CREATE INDEX cachecast_outbox_unsent ON cachecast_outbox (dataset, version) WHERE sent_at IS NULL;
    `,
  },
  {
    id: 2,
    name: 'characters',
    sql: `
      CREATE TABLE characters (
        id uuid PRIMARY KEY,
        code text NOT NULL UNIQUE,
        name text NOT NULL,
        match_label text NOT NULL,
        type_label text,
        dialog text,
        is_default boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX characters_match_label ON characters (match_label);
      -- At most one default character.
      CREATE UNIQUE INDEX characters_one_default ON characters (is_default) WHERE is_default;
    `,
  },
  {
    id: 3,
    name: 'character grants',
    sql: `
      -- id is derived from (user_id, character_id), so a grant delivered twice is written once.
      CREATE TABLE character_grants (
        id uuid PRIMARY KEY,
        user_id text NOT NULL,
        character_id uuid NOT NULL,
        acquired_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX character_grants_user ON character_grants (user_id, acquired_at);
    `,
  },
];
