-- The Results API feed (CONTRACT §9). Ids come from a sequence and are not
-- commit order: two transactions take ids 41 and 42, 42 commits first, and a
-- reader at `id > 40` would move past 41 for good. So each row records the
-- transaction that wrote it (`tx`, a 64-bit xid that never wraps), and the
-- feed reads in (tx, id) order only up to the oldest transaction still in
-- flight (pg_snapshot_xmin): every row behind a cursor is committed, and
-- every row committed later belongs to a transaction at or above that
-- horizon, so it lands in front of the cursor. Rows stored before this
-- migration take its own transaction's id: one old batch, in id order.
ALTER TABLE webhook_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX webhook_events_feed_idx ON webhook_events (tx, id);

-- A wake-up for long-polling readers, never data: one per INSERT statement
-- (a batch writer's whole batch is one statement), delivered at commit.
CREATE FUNCTION imggo_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imggo_events', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION imggo_events_notify();

-- Erasure by data subject: keyed hashes (HMAC-SHA256 under the hash key) of
-- the canonical values of `subjects.fields`, taken before redaction. Never
-- the values themselves. Deleted with their event.
CREATE TABLE event_subjects (
    subject  BYTEA  NOT NULL,
    event_id BIGINT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    PRIMARY KEY (subject, event_id)
);
-- Cascaded deletes (retention, DELETE /v1/jobs) find an event's rows here.
CREATE INDEX event_subjects_event_idx ON event_subjects (event_id);

-- Results API bearer tokens: only the SHA-256 of the token is stored. A
-- name is unique among tokens not revoked. Times are Unix microseconds, as
-- in the SQLite schema, so both backends share one set of queries.
CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT   NOT NULL,
    token_hash   BYTEA  NOT NULL UNIQUE,
    scopes       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX api_tokens_active_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;

-- The audit trail: appended to, never updated; deleted only by audit.max_age.
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    target     TEXT,
    count      BIGINT NOT NULL,
    client_ip  TEXT,
    request_id TEXT
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
-- The database holds the service to it: no UPDATE, no TRUNCATE.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are never changed (%)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
