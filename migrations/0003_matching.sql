-- Matching (matching-rules.md): identification of payment-side transactions,
-- the auth/settled collapse into one payment per purchase, merchant-side
-- (scheme) records, matches and the review queue.
--
-- The rows of `transactions` stay exactly what the parser produced; every
-- stage's state lives in these tables, keyed back to them.

-- Per-merchant matching settings.
ALTER TABLE merchants
    -- C3: candidates ingested since the start of (today - lookback_days).
    ADD COLUMN lookback_days           integer  NOT NULL DEFAULT 14 CHECK (lookback_days BETWEEN 1 AND 3650),
    -- Pending payments whose transaction date is before the start of
    -- (today - N days) become UNMATCHED; NULL: never (Harmonia: stonegate, 2).
    ADD COLUMN unmatched_after_days    integer  CHECK (unmatched_after_days BETWEEN 0 AND 3650),
    -- Amount tolerance of candidate selection: a candidate's amount may
    -- differ from the payment's by at most
    -- greatest(tolerance_minor, |payment| * tolerance_bp / 10000) minor units.
    -- Both 0 (the default) is Harmonia's exact match (C4).
    ADD COLUMN tolerance_minor         bigint   NOT NULL DEFAULT 0 CHECK (tolerance_minor >= 0),
    ADD COLUMN tolerance_bp            integer  NOT NULL DEFAULT 0 CHECK (tolerance_bp BETWEEN 0 AND 1000),
    -- A matcher decision with a lower confidence goes to review instead of
    -- becoming a match.
    ADD COLUMN auto_confirm_confidence smallint NOT NULL DEFAULT 80 CHECK (auto_confirm_confidence BETWEEN 0 AND 100),
    -- The matcher plugin and its config (JSON object; the host adds
    -- "merchant": slug unless the config names one).
    ADD COLUMN matcher                 text     NOT NULL DEFAULT 'harmonia',
    ADD COLUMN matcher_config          jsonb    NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(matcher_config) = 'object');

-- Set when an import's transactions have gone through identification
-- (payments) and scheme staging; NULL on a parsed import means still owed
-- (the matching engine picks it up, also after a crash).
ALTER TABLE imports ADD COLUMN staged_at timestamptz;
CREATE INDEX imports_unstaged ON imports (id) WHERE status = 'parsed' AND staged_at IS NULL;

-- One payment per purchase per provider (matching-rules.md §1, §3). Its
-- fields are the effective ones: a settlement overwrites amount and
-- transaction on a pending auth, and fills empty card digits / auth code.
CREATE TABLE payments (
    id                  bigserial   PRIMARY KEY,
    provider            text        NOT NULL,
    settlement_key      text,
    -- The leg that currently represents the purchase (auth, then settled).
    transaction_id      bigint      NOT NULL REFERENCES transactions (id),
    kind                text        NOT NULL,
    -- NULL while unidentified.
    merchant            bigint      REFERENCES merchants (id),
    identifier          bigint      REFERENCES merchant_identifiers (id) ON DELETE SET NULL,
    -- The payment's primary MID string (C1 compares it with the candidates' MIDs).
    mid                 text        NOT NULL,
    amount_minor        bigint      NOT NULL,
    currency            char(3)     NOT NULL,
    occurred_at         timestamptz NOT NULL,
    utc_offset_seconds  integer     NOT NULL,
    time_known          boolean     NOT NULL,
    card_token          text,
    first_six           text,
    last_four           text,
    auth_code           text,
    --   unidentified  no registered MID (or MIDs of several merchants)
    --   unregistered  card token not in the registry and the merchant
    --                 matches registered cards only
    --   pending       waiting for a merchant-side partner
    --   review        a low-confidence decision awaits a person
    --   matched | forced | spotted | streamed | unmatched: decided (see matches)
    --   dropped       an Amex auth of a spot/stream merchant (payment-feeds.md §2.3)
    status              text        NOT NULL CHECK (status IN ('unidentified', 'unregistered', 'pending', 'review',
                                        'matched', 'forced', 'spotted', 'streamed', 'unmatched', 'dropped')),
    -- Work flag of the matching engine: set by new data on either side.
    needs_match         boolean     NOT NULL DEFAULT false,
    -- When a matcher could not run (plugin missing, refused, trapped): try again after.
    retry_after         timestamptz,
    attempts            integer     NOT NULL DEFAULT 0,
    last_attempt_at     timestamptz,
    last_candidates     integer,
    last_reason         text,
    last_plugin         text,
    note                text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((merchant IS NULL) = (status = 'unidentified'))
);
-- At most one payment per purchase: the collapse's guarantee, also across
-- concurrent stagers.
CREATE UNIQUE INDEX payments_settlement_key ON payments (provider, settlement_key) WHERE settlement_key IS NOT NULL;
CREATE UNIQUE INDEX payments_transaction ON payments (transaction_id);
CREATE INDEX payments_needs_match ON payments (merchant, id) WHERE needs_match AND status = 'pending';
CREATE INDEX payments_pending ON payments (merchant, provider, amount_minor) WHERE status = 'pending';
CREATE INDEX payments_retry ON payments (retry_after) WHERE retry_after IS NOT NULL AND status = 'pending';
CREATE INDEX payments_status ON payments (status, id);

-- What became of every payment-side transaction at staging: it created a
-- payment, settled one (collapse), or was recorded and changed nothing.
CREATE TABLE payment_legs (
    transaction_id  bigint      PRIMARY KEY REFERENCES transactions (id),
    payment_id      bigint      REFERENCES payments (id),
    action          text        NOT NULL CHECK (action IN ('created', 'settled', 'ignored')),
    note            text,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_legs_payment ON payment_legs (payment_id);

-- Merchant-side records (Harmonia's scheme transactions).
CREATE TABLE scheme_transactions (
    id              bigserial   PRIMARY KEY,
    transaction_id  bigint      NOT NULL UNIQUE REFERENCES transactions (id),
    -- NULL while unassigned: the source names no merchant and none of the
    -- row's MIDs is registered.
    merchant        bigint      REFERENCES merchants (id),
    provider        text,
    amount_minor    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    -- MID strings (store ids expanded to every identifier at that location).
    mids            text[]      NOT NULL,
    -- refund: never matched.
    status          text        NOT NULL CHECK (status IN ('unassigned', 'pending', 'matched', 'refund')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((merchant IS NULL) = (status = 'unassigned'))
);
CREATE INDEX scheme_candidates ON scheme_transactions (merchant, provider, amount_minor) WHERE status = 'pending';
CREATE INDEX scheme_unassigned ON scheme_transactions (id) WHERE status = 'unassigned';

-- Every decided payment has exactly one row here: matched, forced (with a
-- scheme record), spotted, streamed or unmatched (without). The unique
-- constraints are the guarantee that no transaction is in two matches,
-- whatever number of workers or daemons share the database.
CREATE TABLE matches (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('matched', 'forced', 'spotted', 'streamed', 'unmatched')),
    merchant        bigint      NOT NULL REFERENCES merchants (id),
    payment_id      bigint      NOT NULL UNIQUE REFERENCES payments (id),
    scheme_id       bigint      UNIQUE REFERENCES scheme_transactions (id),
    -- The matcher build that chose (matched), or NULL.
    plugin_name     text,
    plugin_version  text,
    plugin_sha256   text,
    reason          text        NOT NULL,
    confidence      smallint    CHECK (confidence BETWEEN 0 AND 100),
    candidates      integer,
    -- plugin:name@version, api:<token name>, or accord.
    actor           text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((scheme_id IS NOT NULL) = (kind IN ('matched', 'forced')))
);
CREATE INDEX matches_merchant ON matches (merchant, id);

-- Decisions below the merchant's auto-confirm confidence wait here.
CREATE TABLE reviews (
    id              bigserial   PRIMARY KEY,
    merchant        bigint      NOT NULL REFERENCES merchants (id),
    payment_id      bigint      NOT NULL REFERENCES payments (id),
    scheme_id       bigint      NOT NULL REFERENCES scheme_transactions (id),
    confidence      smallint    NOT NULL,
    reason          text        NOT NULL,
    candidates      integer     NOT NULL,
    plugin_name     text        NOT NULL,
    plugin_version  text        NOT NULL,
    plugin_sha256   text        NOT NULL,
    --   superseded: the payment or the candidate was decided otherwise first.
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'confirmed', 'rejected', 'superseded')),
    decided_by      text,
    decided_at      timestamptz,
    note            text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX reviews_open_payment ON reviews (payment_id) WHERE status = 'open';
CREATE INDEX reviews_status ON reviews (status, id);
CREATE INDEX reviews_rejected ON reviews (payment_id, scheme_id) WHERE status = 'rejected';
