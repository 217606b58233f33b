-- Erasure reaches quarantined and spooled deliveries too (CONTRACT §9, §10).
-- Quarantined bodies that parsed are indexed like events, by the keyed hash
-- of each subject value (never the value); deleted with their row.
CREATE TABLE quarantine_subjects (
    subject       BYTEA  NOT NULL,
    quarantine_id BIGINT NOT NULL REFERENCES quarantined_deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (subject, quarantine_id)
);
CREATE INDEX quarantine_subjects_row_idx ON quarantine_subjects (quarantine_id);

-- A replica's spool is on its own disk: an erasure on any replica leaves
-- the subject's hash here, and each drainer drops spooled deliveries of
-- that subject received before it. Kept for retention.max_age.
CREATE TABLE erased_subjects (
    subject   BYTEA       PRIMARY KEY,
    erased_at TIMESTAMPTZ NOT NULL
);
