-- Erasure reaches quarantined deliveries too (CONTRACT §9, §10): bodies
-- that parsed are indexed like events, by the keyed hash of each subject
-- value (never the value); deleted with their row. erased_subjects mirrors
-- the Postgres schema (SQLite has no spool). Times: Unix microseconds.
CREATE TABLE quarantine_subjects (
    subject       BLOB    NOT NULL,
    quarantine_id INTEGER NOT NULL REFERENCES quarantined_deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (subject, quarantine_id)
) WITHOUT ROWID;
CREATE INDEX quarantine_subjects_row_idx ON quarantine_subjects (quarantine_id);

CREATE TABLE erased_subjects (
    subject   BLOB    PRIMARY KEY,
    erased_at INTEGER NOT NULL
) WITHOUT ROWID;
