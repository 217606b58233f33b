-- Signed deliveries refused with invalid_json, invalid_payload or
-- stale_timestamp (CONTRACT §10), kept so that no genuine result is lost to
-- a validation rule. The body is redacted, then sealed; seal_id is bound
-- into the ciphertext's associated data. received_at: Unix microseconds.
CREATE TABLE quarantined_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    seal_id     TEXT    NOT NULL UNIQUE,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL
);

CREATE INDEX quarantined_deliveries_received_at_idx ON quarantined_deliveries (received_at);
