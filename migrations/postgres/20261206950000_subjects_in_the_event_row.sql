-- An event's subject hashes (CONTRACT §9) move into its own row. In a
-- table of their own every insert paid, per subject, a heap row, two
-- b-tree entries and a foreign-key check that locked the event's row;
-- the batch statement joined them back by (job_id, event). As an array in
-- the row they cost one GIN entry each, written with the row, and go with
-- it when it is deleted. Events without subjects keep NULL and stay out of
-- the index.
ALTER TABLE webhook_events ADD COLUMN subjects BYTEA[];

UPDATE webhook_events e SET subjects = s.hashes
FROM (SELECT event_id, array_agg(subject ORDER BY subject) AS hashes
      FROM event_subjects GROUP BY event_id) s
WHERE e.id = s.event_id;

-- Erasure looks events up with `subjects @> ARRAY[hash]`. fastupdate off:
-- the pending list it would otherwise fill is merged into the index by
-- whichever insert finds it full, a stall of that whole batch.
CREATE INDEX webhook_events_subjects_idx ON webhook_events USING gin (subjects)
    WITH (fastupdate = off) WHERE subjects IS NOT NULL;

DROP TABLE event_subjects;
