-- job_id and event are identifiers, not words: compare them byte by byte.
-- Under the database's default collation (en_US.UTF-8, C.UTF-8, ...) every
-- probe of the (job_id, event) unique index calls strcoll on copies of both
-- strings; each insert probes it twice (ON CONFLICT's check, then the insert).
-- The unique index is rebuilt; the table is not rewritten.
ALTER TABLE webhook_events
    ALTER COLUMN job_id TYPE TEXT COLLATE "C",
    ALTER COLUMN event TYPE TEXT COLLATE "C";
