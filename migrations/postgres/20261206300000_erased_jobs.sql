-- A job deleted by `DELETE /v1/jobs/{id}` (CONTRACT §9): a delivery of it
-- received before the delete answered but stored after it (in flight on
-- another replica, waiting in a spool) is refused, as erasure by subject
-- does. Kept for retention.max_age.
CREATE TABLE erased_jobs (
    job_id    TEXT COLLATE "C" PRIMARY KEY,
    erased_at TIMESTAMPTZ      NOT NULL
);
CREATE INDEX erased_jobs_at_idx ON erased_jobs (erased_at);
