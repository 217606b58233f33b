-- Dedup keys become a 16-byte digest of (event, job_id) instead of the two
-- texts (CONTRACT §5: unique on (job_id, event) for the whole retention
-- window). The batch probes every key window retention keeps for each new
-- key, at random places (job ids are random): those index pages are the
-- write path's working set, and it grows with the rows retained. A
-- fixed-size key halves it: an index entry of 36 bytes instead of about 68
-- for a uuid job id, a heap row of 52 bytes instead of about 90 (measured:
-- ten million keys took 1.96 GB as texts and about 1 GB as digests). The
-- digest is stored as a `uuid`, Postgres' fixed-size 16-byte type: a
-- `bytea` would add a length byte and, before the timestamp, the padding
-- to eight.
--
-- The digest is the first 16 bytes of SHA-256 over the event name, a line
-- feed (which an event name cannot hold, so the split is unambiguous) and
-- the job id. Two distinct keys share a digest with a probability of about
-- n^2 / 2^129 (1e-15 at a trillion keys); only a signed sender or an
-- operator can write keys, and neither gains from a collision: a keyed hash
-- would buy nothing and put the hash key into the database.
--
-- Existing keys are copied into the new form in one transaction (about 4 s
-- per million keys here: stop the replicas first, as for 20261209100000).
-- The server's sessions have sequential scans off (src/store/pg_connect.rs);
-- the copy below reads every key, which a scan does best.
SET LOCAL enable_seqscan = on;

CREATE FUNCTION imggo_event_key(job_id text, event text) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN encode(substr(sha256(convert_to(event || E'\n' || job_id, 'UTF8')), 1, 16), 'hex')::uuid;

-- The old table, its windows and their indexes step aside under names of
-- their own, so that the new ones take the names the server looks for.
ALTER TABLE event_keys RENAME TO event_keys_by_text;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel, c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'event_keys_by_text'::regclass LOOP
        EXECUTE format('ALTER TABLE %s RENAME TO %I', r.rel, r.relname || '_by_text');
    END LOOP;
    FOR r IN SELECT x.indexrelid::regclass AS idx, c.relname FROM pg_index x
             JOIN pg_class c ON c.oid = x.indexrelid
             WHERE x.indrelid = 'event_keys_by_text'::regclass
                OR x.indrelid IN (SELECT inhrelid FROM pg_inherits
                                  WHERE inhparent = 'event_keys_by_text'::regclass) LOOP
        EXECUTE format('ALTER INDEX %s RENAME TO %I', r.idx, r.relname || '_by_text');
    END LOOP;
END
$$;

CREATE TABLE event_keys (
    key   UUID        NOT NULL,
    since TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key, since)
) PARTITION BY RANGE (since);

-- The windows that hold keys; the server makes the ones ahead at start.
DO $$
DECLARE lo timestamptz;
BEGIN
    FOR lo IN SELECT DISTINCT since FROM event_keys_by_text LOOP
        PERFORM imggo_create_partition('event_keys', lo, lo + interval '672 hours');
    END LOOP;
END
$$;

-- In key order, so that each window's index is filled left to right (a
-- quarter smaller than random inserts leave it, and fewer page writes).
INSERT INTO event_keys (key, since)
SELECT imggo_event_key(job_id, event) AS key, since FROM event_keys_by_text
ORDER BY key, since;

DROP TABLE event_keys_by_text;
