-- Forwarding to destinations (CONTRACT §11).
--
-- One row per destination: the feed position (tx, id) up to which every
-- message was confirmed (or dead-lettered), the last seq sent (replays of
-- dead letters take the seqs after it), why it is paused (HTTP 410) and its
-- last error (safe to show: never a secret or a payload). The lease columns
-- serve SQLite only; Postgres replicas hold an advisory lock instead.
CREATE TABLE forward_positions (
    destination  TEXT   PRIMARY KEY,
    tx           BIGINT NOT NULL DEFAULT 0,
    id           BIGINT NOT NULL DEFAULT 0,
    seq_hi       BIGINT NOT NULL DEFAULT 0,
    seq_lo       BIGINT NOT NULL DEFAULT 0,
    paused       TEXT,
    last_error   TEXT,
    missed       BIGINT NOT NULL DEFAULT 0,
    updated_at   BIGINT NOT NULL,
    lease_holder TEXT,
    lease_until  BIGINT
);

-- Messages a destination refused for good. Never the body (it holds the
-- payload): a replay reads the event (or notice) again by its place in the
-- feed. `replay` is set by `forward dead replay`; the relay sends it.
CREATE TABLE forward_dead (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    notice      BOOLEAN NOT NULL,
    tx          BIGINT  NOT NULL,
    row_id      BIGINT  NOT NULL,
    reason      TEXT    NOT NULL,
    dead_at     BIGINT  NOT NULL,
    replay      BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (destination, message_id)
);

-- Erasure notices, written in the erasure's own transaction. Each takes its
-- id from the events' sequence and records its transaction as events do, so
-- notices and events share one commit order and one position per
-- destination covers both. `event_ids` is the comma-separated list of the
-- deleted events' ids (never the erased value).
CREATE TABLE forward_notices (
    id         BIGINT PRIMARY KEY,
    tx         xid8   NOT NULL DEFAULT pg_current_xact_id(),
    event_ids  TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX forward_notices_feed_idx ON forward_notices (tx, id);
