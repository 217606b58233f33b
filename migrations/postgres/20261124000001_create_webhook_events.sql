-- One row per (job_id, event) delivery. Only the envelope is plaintext; the
-- redacted payload is sealed with an AEAD key named by key_id.
CREATE TABLE webhook_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT        NOT NULL,
    event       TEXT        NOT NULL,
    pattern_id  TEXT,
    status      TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    key_id      TEXT        NOT NULL,
    nonce       BYTEA       NOT NULL,
    ciphertext  BYTEA       NOT NULL,
    CONSTRAINT webhook_events_job_event_key UNIQUE (job_id, event)
);

-- Retention deletes the oldest rows first in small batches.
CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);
