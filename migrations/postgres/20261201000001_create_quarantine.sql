-- Signed deliveries refused with invalid_json, invalid_payload or
-- stale_timestamp (CONTRACT §10), kept so that no genuine result is lost to
-- a validation rule. The body is redacted, then sealed; seal_id is bound
-- into the ciphertext's associated data, and unique: a row the spool
-- moves here twice (a crash between commit and trim) is kept once.
CREATE TABLE quarantined_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL,
    reason      TEXT        NOT NULL,
    request_id  TEXT        NOT NULL,
    bytes       BIGINT      NOT NULL,
    seal_id     TEXT        NOT NULL UNIQUE,
    key_id      TEXT        NOT NULL,
    nonce       BYTEA       NOT NULL,
    ciphertext  BYTEA       NOT NULL
);

CREATE INDEX quarantined_deliveries_received_at_idx ON quarantined_deliveries (received_at);
