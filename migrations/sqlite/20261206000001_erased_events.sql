-- An erased or deleted event's (job_id, event) (CONTRACT §9): a later
-- delivery of the same key answers duplicate and is not stored again, for
-- as long as the event itself could have been kept (retention.max_age).
-- Times: Unix microseconds.
CREATE TABLE erased_events (
    job_id    TEXT    NOT NULL,
    event     TEXT    NOT NULL,
    erased_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, event)
) WITHOUT ROWID;
CREATE INDEX erased_events_at_idx ON erased_events (erased_at);
CREATE INDEX erased_subjects_at_idx ON erased_subjects (erased_at);
