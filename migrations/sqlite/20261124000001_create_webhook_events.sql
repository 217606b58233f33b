-- One row per (job_id, event) delivery. Only the envelope is plaintext; the
-- redacted payload is sealed with an AEAD key named by key_id.
-- received_at is Unix time in microseconds, bound from Rust on both sides
-- (SQLite's CURRENT_TIMESTAMP text does not compare with bound values).
CREATE TABLE webhook_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    pattern_id  TEXT,
    status      TEXT,
    received_at INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    UNIQUE (job_id, event)
);

CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);
