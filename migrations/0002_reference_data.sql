-- Reference data for matching: merchants (loyalty schemes), payment
-- providers, the merchant identifiers (MIDs) that tie a provider's
-- transactions to a merchant, and the card registry (card token → digits and
-- loyalty id) that the user-identity fallbacks of matching read.

CREATE TABLE merchants (
    id                          bigserial   PRIMARY KEY,
    slug                        text        NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
    name                        text        NOT NULL,
    -- match: pair with merchant-side records; spot: every identified payment
    -- is a match on its own; stream: straight on to routing.
    mode                        text        NOT NULL DEFAULT 'match' CHECK (mode IN ('match', 'spot', 'stream')),
    -- Whether a payment whose card token is not in card_registry is still
    -- matched (then without the card-digit fallbacks).
    match_unregistered_cards    boolean     NOT NULL DEFAULT true,
    created_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment_providers (
    id          bigserial   PRIMARY KEY,
    slug        text        NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO payment_providers (slug) VALUES ('visa'), ('amex'), ('mastercard');

CREATE TABLE merchant_identifiers (
    id                      bigserial   PRIMARY KEY,
    identifier              text        NOT NULL CHECK (identifier <> ''),
    identifier_type         text        NOT NULL CHECK (identifier_type IN ('primary', 'secondary', 'psimi')),
    provider                bigint      NOT NULL REFERENCES payment_providers (id),
    merchant                bigint      NOT NULL REFERENCES merchants (id),
    location_id             text,
    merchant_internal_id    text,
    location_name           text,
    postcode                text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- Also the index identification looks identifiers up through.
    UNIQUE (identifier, identifier_type, provider)
);
-- Offboarding by location and location-id merchant feeds.
CREATE INDEX merchant_identifiers_merchant_location
    ON merchant_identifiers (merchant, location_id);

CREATE TABLE card_registry (
    card_token  text        PRIMARY KEY,
    first_six   text        CHECK (first_six ~ '^[0-9]{6}$'),
    last_four   text        CHECK (last_four ~ '^[0-9]{4}$'),
    loyalty_id  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
