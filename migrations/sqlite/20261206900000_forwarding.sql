-- Forwarding to destinations (CONTRACT §11). See the Postgres migration of
-- the same name for what each column means. On SQLite the feed position is
-- (0, id) and one instance holds a destination through a lease
-- (`lease_holder` until `lease_until`, Unix microseconds).
CREATE TABLE forward_positions (
    destination  TEXT    PRIMARY KEY,
    tx           INTEGER NOT NULL DEFAULT 0,
    id           INTEGER NOT NULL DEFAULT 0,
    seq_hi       INTEGER NOT NULL DEFAULT 0,
    seq_lo       INTEGER NOT NULL DEFAULT 0,
    paused       TEXT,
    last_error   TEXT,
    missed       INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL,
    lease_holder TEXT,
    lease_until  INTEGER
);

CREATE TABLE forward_dead (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    notice      BOOLEAN NOT NULL,
    tx          INTEGER NOT NULL,
    row_id      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    dead_at     INTEGER NOT NULL,
    replay      BOOLEAN NOT NULL DEFAULT 0,
    UNIQUE (destination, message_id)
);

-- Erasure notices: the id is taken from the events' AUTOINCREMENT sequence
-- (sqlite_sequence) inside the erasure's transaction, so notices and events
-- share one commit order.
CREATE TABLE forward_notices (
    id         INTEGER PRIMARY KEY,
    event_ids  TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
