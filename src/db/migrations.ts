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
  {
    id: 4,
    name: 'epochs and content digests',
    sql: `
      -- The epoch: a random id born with a dataset's version row. A database
      -- restored or recreated starts a new one (or an old one at an older
      -- version): replicas never compare versions across it.
      ALTER TABLE cachecast_versions
        ADD COLUMN epoch text NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 16),
        ADD COLUMN digest bigint NOT NULL DEFAULT 0;
      -- The epoch an outbox row was committed in.
      ALTER TABLE cachecast_outbox ADD COLUMN epoch text;

      -- XOR of bigints as an aggregate (built in from PostgreSQL 14).
      DO $$ BEGIN
        IF to_regprocedure('bit_xor(bigint)') IS NULL THEN
          CREATE AGGREGATE bit_xor(bigint) (SFUNC = int8xor, STYPE = bigint);
        END IF;
      END $$;

      -- The content digest (replica/digest.ts): XOR over entries of the first
      -- 8 bytes of md5(text), text = each field as <UTF-8 length>:<value> or ~
      -- for null, joined by |, then t/f for is_default (datasets/catalog.ts).
      CREATE FUNCTION cachecast_hash64(t text) RETURNS bigint
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $f$ SELECT ('x' || substr(md5(t), 1, 16))::bit(64)::bigint $f$;
      CREATE FUNCTION cachecast_field(t text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $f$ SELECT CASE WHEN t IS NULL THEN '~' ELSE octet_length(t)::text || ':' || t END $f$;
      CREATE FUNCTION cachecast_character_hash(c characters) RETURNS bigint
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $f$ SELECT cachecast_hash64(concat_ws('|', cachecast_field(c.id::text), cachecast_field(c.code),
          cachecast_field(c.name), cachecast_field(c.match_label), cachecast_field(c.type_label),
          cachecast_field(c.dialog), CASE WHEN c.is_default THEN 't' ELSE 'f' END)) $f$;

      -- Kept in the writer's own statement, for every writer: cachecast's
      -- repository, the seed's Python import job, a psql session alike.
      CREATE FUNCTION cachecast_characters_digest() RETURNS trigger LANGUAGE plpgsql AS $f$
      DECLARE
        delta bigint := 0;
        part bigint;
      BEGIN
        IF TG_OP = 'TRUNCATE' THEN
          UPDATE cachecast_versions SET digest = 0 WHERE dataset = 'catalog';
          RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
          SELECT coalesce(bit_xor(cachecast_character_hash(o)), 0) INTO part FROM old_rows o;
          delta := delta # part;
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
          SELECT coalesce(bit_xor(cachecast_character_hash(n)), 0) INTO part FROM new_rows n;
          delta := delta # part;
        END IF;
        IF delta <> 0 THEN
          INSERT INTO cachecast_versions AS v (dataset, version, digest) VALUES ('catalog', 0, delta)
            ON CONFLICT (dataset) DO UPDATE SET digest = v.digest # excluded.digest;
        END IF;
        RETURN NULL;
      END $f$;
      CREATE TRIGGER cachecast_characters_digest_insert AFTER INSERT ON characters
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cachecast_characters_digest();
      CREATE TRIGGER cachecast_characters_digest_update AFTER UPDATE ON characters
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION cachecast_characters_digest();
      CREATE TRIGGER cachecast_characters_digest_delete AFTER DELETE ON characters
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cachecast_characters_digest();
      CREATE TRIGGER cachecast_characters_digest_truncate AFTER TRUNCATE ON characters
        FOR EACH STATEMENT EXECUTE FUNCTION cachecast_characters_digest();

      -- The catalog as it is now.
      INSERT INTO cachecast_versions AS v (dataset, version, digest)
        SELECT 'catalog', 0, coalesce(bit_xor(cachecast_character_hash(c)), 0) FROM characters c
        ON CONFLICT (dataset) DO UPDATE SET digest = excluded.digest;
    `,
  },
];
