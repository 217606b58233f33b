-- Events move into time partitions (CONTRACT §5): retention drops a whole
-- partition (a constant number of statements, whatever its row count)
-- instead of deleting row by row, and each partition's indexes hold one
-- interval's rows, so an insert's index pages stay in memory however large
-- the table grows.
--
-- A unique index of a partitioned table must include the partition key, so
-- (job_id, event) can no longer be unique across the table. Uniqueness
-- moves into `event_keys`: one narrow row per stored key, in four-week windows
-- (`since`, the Monday 00:00 UTC that starts the window of the event's
-- receipt) that are partitions of their own, dropped by retention like the
-- events' once the whole window is past `retention.max_age`. The batch insert
-- claims a key with ON CONFLICT in its window and checks the other windows
-- (those not past max_age: two or three at the default 30 days);
-- `store::postgres` says how two
-- deliveries of one key in different windows are kept from both winning.
--
-- This migration copies every existing event into daily partitions, in one
-- transaction: stop the replicas first (docs/storage.md, with the time it
-- takes per million rows). Ids, feed positions (tx, id) and every column
-- keep their values; the id sequence continues where it was.

-- Creates the partition of `parent` for [lo, hi), named after lo in UTC,
-- as a table of its own attached afterwards: ATTACH takes SHARE UPDATE
-- EXCLUSIVE on the parent, which inserts and reads do not wait for (CREATE
-- TABLE ... PARTITION OF would take ACCESS EXCLUSIVE). The parent's
-- indexes are built on the empty table as it is attached.
CREATE FUNCTION imggo_create_partition(parent regclass, lo timestamptz, hi timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = parent)
                 || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS)', name, parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, lo, hi);
    RETURN name;
END
$$;

ALTER TABLE webhook_events RENAME TO webhook_events_unpartitioned;
DROP TRIGGER webhook_events_notify ON webhook_events_unpartitioned;
ALTER TABLE webhook_events_unpartitioned
    DROP CONSTRAINT webhook_events_pkey,
    DROP CONSTRAINT webhook_events_job_event_key;
DROP INDEX webhook_events_received_at_idx, webhook_events_feed_idx, webhook_events_subjects_idx;

-- Postgres 15 has no identity columns on partitioned tables: a sequence of
-- its own, owned by the column (so pg_get_serial_sequence still finds it,
-- which erasure notices take their ids from), continuing the old one.
CREATE SEQUENCE webhook_event_ids AS bigint;
SELECT setval('webhook_event_ids', last_value, is_called) FROM webhook_events_id_seq;

CREATE TABLE webhook_events (
    id                BIGINT           NOT NULL DEFAULT nextval('webhook_event_ids'),
    job_id            TEXT COLLATE "C" NOT NULL,
    event             TEXT COLLATE "C" NOT NULL,
    pattern_id        TEXT,
    status            TEXT,
    received_at       TIMESTAMPTZ      NOT NULL DEFAULT now(),
    key_id            TEXT             NOT NULL,
    nonce             BYTEA            NOT NULL,
    ciphertext        BYTEA            NOT NULL,
    tx                xid8             NOT NULL DEFAULT pg_current_xact_id(),
    operator_supplied BOOLEAN          NOT NULL DEFAULT false,
    valid             BOOLEAN,
    validation_errors TEXT,
    subjects          BYTEA[],
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE webhook_event_ids OWNED BY webhook_events.id;

-- A job's events (GET /v1/jobs, DELETE /v1/jobs, `show`).
CREATE INDEX webhook_events_job_idx ON webhook_events (job_id);
-- The feed, in commit order (20261201100000_results_api_feed.sql).
CREATE INDEX webhook_events_feed_idx ON webhook_events (tx, id);
-- Retention's count of events a destination missed reads one purge
-- interval's receipts at a time; a BRIN index costs an insert next to
-- nothing (rows arrive in receipt order).
CREATE INDEX webhook_events_received_idx ON webhook_events USING brin (received_at);
-- Erasure by subject (20261206950000_subjects_in_the_event_row.sql).
CREATE INDEX webhook_events_subjects_idx ON webhook_events USING gin (subjects)
    WITH (fastupdate = off) WHERE subjects IS NOT NULL;
CREATE TRIGGER webhook_events_notify AFTER INSERT ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION imggo_events_notify();

CREATE TABLE event_keys (
    job_id TEXT COLLATE "C" NOT NULL,
    event  TEXT COLLATE "C" NOT NULL,
    since  TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (job_id, event, since)
) PARTITION BY RANGE (since);

-- The windows of the stored rows: days for events (the default
-- `storage.partition_interval`; the server continues with its own from the
-- last one), four weeks for keys. `interval '24 hours'`, never '1 day', which a
-- session in a zone with daylight saving would stretch.
DO $$
DECLARE
    lo timestamptz;
    last timestamptz;
BEGIN
    SELECT date_trunc('day', min(received_at), 'UTC'), max(received_at) INTO lo, last
    FROM webhook_events_unpartitioned;
    WHILE lo <= last LOOP
        PERFORM imggo_create_partition('webhook_events', lo, lo + interval '24 hours');
        lo := lo + interval '24 hours';
    END LOOP;
    SELECT date_bin('28 days', min(received_at), '1970-01-05 00:00:00+00'), max(received_at)
    INTO lo, last FROM webhook_events_unpartitioned;
    WHILE lo <= last LOOP
        PERFORM imggo_create_partition('event_keys', lo, lo + interval '672 hours');
        lo := lo + interval '672 hours';
    END LOOP;
END
$$;

INSERT INTO webhook_events (id, job_id, event, pattern_id, status, received_at, key_id, nonce,
                            ciphertext, tx, operator_supplied, valid, validation_errors, subjects)
SELECT id, job_id, event, pattern_id, status, received_at, key_id, nonce,
       ciphertext, tx, operator_supplied, valid, validation_errors, subjects
FROM webhook_events_unpartitioned;

INSERT INTO event_keys (job_id, event, since)
SELECT job_id, event, date_bin('28 days', received_at, '1970-01-05 00:00:00+00')
FROM webhook_events_unpartitioned;

DROP TABLE webhook_events_unpartitioned;

-- Forwarding (CONTRACT §11): an event no read returns any more (past
-- max_age, its partition not yet dropped) cannot be forwarded. Each pass
-- counts, per destination, the events that crossed max_age since the pass
-- before (receipts from `missed_through` to the new cutoff) beyond its
-- position, so each is counted once, when it is lost, even if the relay
-- moves past it before its partition is dropped.
ALTER TABLE forward_positions ADD COLUMN missed_through TIMESTAMPTZ;
