-- accord's initial schema: imports and their retained bytes, canonical
-- transactions, rejected rows and the append-only event log.
--
-- Money is integer minor units plus an ISO 4217 code, never a float. Times
-- are timestamptz; where the original wall-clock offset matters it is kept
-- beside the instant in seconds east of UTC.

CREATE TABLE imports (
    id              bigserial   PRIMARY KEY,
    source          text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('directory', 'http', 'cli')),
    original_name   text,
    size_bytes      bigint      NOT NULL CHECK (size_bytes >= 0),
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL CHECK (status IN ('received', 'parsed', 'failed', 'duplicate')),
    error           text,
    duplicate_of    bigint      REFERENCES imports (id),
    plugin_name     text,
    plugin_version  text,
    plugin_sha256   text,
    -- Counts are NULL until the import is parsed. bigint because a 1 GB file
    -- of short rows is tens of millions of rows and the cost is nil.
    accepted        bigint,
    duplicates      bigint,
    rejected        bigint,
    parsed_at       timestamptz,
    -- Directory channel only: where the file was moved once its fate was
    -- committed. NULL with status parsed/failed means the move is still owed
    -- (crash between commit and rename); recovery finishes it.
    disposed_to     text,
    disposed_at     timestamptz,
    CHECK ((status = 'duplicate') = (duplicate_of IS NOT NULL)),
    CHECK (status <> 'parsed' OR (accepted IS NOT NULL AND duplicates IS NOT NULL AND rejected IS NOT NULL))
);

-- The same bytes for a source are imported once. A failed import does not
-- hold the slot: after a parser fix, sending the same file again must work
-- without manual surgery. Concurrent receivers of the same bytes serialise on
-- an advisory lock in the store; this index is the backstop.
CREATE UNIQUE INDEX imports_source_sha256_live
    ON imports (source, sha256)
    WHERE status IN ('received', 'parsed');
CREATE INDEX imports_status ON imports (status);
CREATE INDEX imports_source_id ON imports (source, id);

-- The raw bytes received, byte for byte (compliance: what we received can
-- always be produced again), in chunks of at most 1 MiB so neither writing
-- nor reading a 1 GB file ever holds it in memory.
--
-- The foreign key is deferred because the chunks are written while the body
-- is still streaming in, and the import row (which needs the final sha256
-- and size) is only inserted at the end of the same transaction.
CREATE TABLE import_chunks (
    import_id   bigint  NOT NULL REFERENCES imports (id) DEFERRABLE INITIALLY DEFERRED,
    seq         integer NOT NULL CHECK (seq >= 0),
    bytes       bytea   NOT NULL CHECK (octet_length(bytes) <= 1048576),
    PRIMARY KEY (import_id, seq)
);
-- Out of line and uncompressed: compressing every received megabyte costs
-- more ingest throughput than the disk it saves; storage policy is an
-- operator's choice (ALTER TABLE ... SET STORAGE / COMPRESSION).
ALTER TABLE import_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;

CREATE TABLE transactions (
    id                  bigserial   PRIMARY KEY,
    source              text        NOT NULL,
    external_id         text        NOT NULL,
    import_id           bigint      NOT NULL REFERENCES imports (id),
    source_row          bigint,
    side                text        NOT NULL CHECK (side IN ('payment', 'merchant', 'standalone')),
    kind                text        NOT NULL CHECK (kind IN ('sale', 'refund', 'authorisation', 'settlement', 'transfer')),
    amount_minor        bigint      NOT NULL,
    currency            char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    occurred_at         timestamptz NOT NULL,
    -- Offset the time was observed in, so the original wall time can be shown.
    utc_offset_seconds  integer     NOT NULL CHECK (utc_offset_seconds BETWEEN -86399 AND 86399),
    time_known          boolean     NOT NULL,
    provider            text,
    card_first_six      text,
    card_last_four      text,
    card_token          text,
    auth_code           text,
    approval_code       text,
    settlement_key      text,
    account_id          text,
    reference_id        text,
    payer_account       text,
    beneficiary_account text,
    -- [{"value": ..., "kind": "primary"|"secondary"|"psimi"|"store"}, ...]
    merchant_ids        jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(merchant_ids) = 'array'),
    -- [[key, value], ...]: an array of pairs, not an object, because order
    -- and repeated keys are part of what the parser saw.
    extras              jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(extras) = 'array'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
-- For matching (settlement reconciliation; amount-first candidate search)
-- and for reading an import's transactions back.
CREATE INDEX transactions_settlement_key ON transactions (settlement_key) WHERE settlement_key IS NOT NULL;
CREATE INDEX transactions_provider_amount ON transactions (provider, amount_minor);
CREATE INDEX transactions_import_id ON transactions (import_id);

CREATE TABLE rejects (
    id          bigserial PRIMARY KEY,
    import_id   bigint    NOT NULL REFERENCES imports (id),
    source_row  bigint,
    byte_offset bigint,
    field       text,
    reason      text      NOT NULL,
    raw         text      NOT NULL
);
CREATE INDEX rejects_import_id ON rejects (import_id, id);

-- Append-only log of stage transitions: who (actor) did what (stage) to
-- which entity, when.
CREATE TABLE events (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    entity      text        NOT NULL,
    entity_id   bigint,
    stage       text        NOT NULL,
    actor       text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX events_entity ON events (entity, entity_id, id);

-- Compliance: the log is evidence, so the database itself refuses to rewrite
-- it, whatever the application does.
CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
