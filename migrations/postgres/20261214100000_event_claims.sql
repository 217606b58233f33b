-- Dedup keys are claimed into a small table of the receipt's day, and
-- sealed once a day into the four-week windows of `event_keys`, which the
-- batch then only probes (CONTRACT §5: unique on (job_id, event) for the
-- whole retention window; docs/storage.md, "Dedup keys").
--
-- Why: every insert claimed its key at a random place of the current
-- window's index (job ids are random). Once that index outgrew memory,
-- each claim read a page in, evicted a dirty one, and dirtied a page that
-- the next checkpoint logged whole: with ten million events stored, 0.27
-- full-page images (8 kB each) per delivery against 0.04 on an empty
-- table, and ingest at 0.76x. A day's claims stay small and in memory; the
-- seal copies them in key order, so each page of a window's index is
-- written once per seal rather than once per claim.
--
-- Existing keys stay where they are: `event_keys` keeps the sealed keys.
-- Nothing is copied, so the migration takes no time per row.
CREATE TABLE event_claims (
    key UUID        NOT NULL,
    day TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key, day)
) PARTITION BY RANGE (day);

-- A replica of an earlier release claims keys into `event_keys` and never
-- looks at `event_claims`: beside this release it would store a second
-- delivery of a key claimed here. Its batches fail instead (and go to its
-- spool, or answer 503) until it is replaced; only the seal writes here.
-- Stop the replicas of earlier releases before this migration runs, as for
-- 20261209100000 and 20261210100000.
CREATE FUNCTION imggo_event_keys_sealed_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('imggo.seal', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'event_keys holds sealed keys only: claims go to event_claims '
                        '(a replica of a release before 20261214100000 is still running)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER event_keys_sealed_only BEFORE INSERT ON event_keys
    FOR EACH STATEMENT EXECUTE FUNCTION imggo_event_keys_sealed_only();

-- A batch decides its claim days and locks from its replica's clock just
-- before it waits for those locks (behind an erasure, or a batch of old
-- rows that runs alone). One that waited longer than `max_wait` would act
-- on a stale decision: its statement fails with IG001 instead, and the
-- receiver decides again and retries. `imggo.guard_from` is the clock
-- time the batch began waiting, set in its transaction.
CREATE FUNCTION imggo_guard_fresh(max_wait interval) RETURNS boolean
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    waited interval := statement_timestamp()
                       - current_setting('imggo.guard_from')::timestamptz;
BEGIN
    IF waited > max_wait THEN
        RAISE EXCEPTION 'the batch waited % for its locks', waited
            USING ERRCODE = 'IG001';
    END IF;
    RETURN true;
END
$$;
