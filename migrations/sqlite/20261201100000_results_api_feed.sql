-- The Results API (CONTRACT §9). SQLite commits one writer at a time, and
-- the writer holds the database lock from its first insert through commit,
-- so AUTOINCREMENT ids are handed out in commit order: the feed's cursor is
-- the id alone.

-- Erasure by data subject: keyed hashes of `subjects.fields` values, taken
-- before redaction; never the values. Deleted with their event.
CREATE TABLE event_subjects (
    subject  BLOB    NOT NULL,
    event_id INTEGER NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    PRIMARY KEY (subject, event_id)
) WITHOUT ROWID;
CREATE INDEX event_subjects_event_idx ON event_subjects (event_id);

-- Results API bearer tokens: only the SHA-256 of the token is stored.
-- Times are Unix microseconds.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX api_tokens_active_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;

-- The audit trail: appended to, never updated; deleted only by audit.max_age.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT,
    count      INTEGER NOT NULL,
    client_ip  TEXT,
    request_id TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
-- The database holds the service to it: no UPDATE.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records are never changed (UPDATE)');
END;
