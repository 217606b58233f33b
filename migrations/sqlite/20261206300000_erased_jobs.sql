-- A job deleted by `DELETE /v1/jobs/{id}`; see the Postgres migration.
-- Times: Unix microseconds.
CREATE TABLE erased_jobs (
    job_id    TEXT    PRIMARY KEY,
    erased_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX erased_jobs_at_idx ON erased_jobs (erased_at);
