-- An erased or deleted event's (job_id, event) (CONTRACT §9): a later
-- delivery of the same key answers duplicate and is not stored again, for
-- as long as the event itself could have been kept (retention.max_age).
-- A key, never a subject: a new job of the same person is new data.
CREATE TABLE erased_events (
    job_id    TEXT COLLATE "C" NOT NULL,
    event     TEXT COLLATE "C" NOT NULL,
    erased_at TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (job_id, event)
);
-- Retention deletes both kinds of tombstone by age.
CREATE INDEX erased_events_at_idx ON erased_events (erased_at);
CREATE INDEX erased_subjects_at_idx ON erased_subjects (erased_at);
