-- The subject index (GIN over each event's subject hashes) took 15-35 % of
-- Postgres' CPU per delivery: with `fastupdate = off` every hash of every
-- row goes at once into the entry tree, at a random place (the hashes are
-- random). With a pending list, rows are appended to it and merged into the
-- tree in sorted runs when it fills. The default list (4 MB) made each
-- merge a stall of 100 ms and more for the insert that triggered it; 64 kB
-- merges a few hundred rows at a time, which no request notices. A search
-- (erasure by subject) reads the list too, so nothing is missed while rows
-- wait in it.
--
-- Postgres 15 cannot change the options of a partitioned index (ALTER INDEX
-- SET refuses it), only of each partition's own index, and that takes an
-- ACCESS EXCLUSIVE lock on the index. So this migration only makes every
-- new partition's index with them (imggo_create_partition, right after
-- ATTACH made it, in the same transaction: nobody else sees the index yet).
-- The partitions that exist already get them from the server's partition
-- upkeep (src/store/partitions.rs, `tune_subject_indexes`): one index per
-- short transaction, waiting at most 100 ms for its lock, retried at the
-- next pass, so that no insert or feed read waits behind a migration that
-- holds every partition's index. The parent index keeps the options it was
-- created with (fastupdate = off); each partition's index is the one used.
CREATE OR REPLACE FUNCTION imggo_create_partition(parent regclass, lo timestamptz, hi timestamptz)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = parent)
                 || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
    idx regclass;
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS)', name, parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, lo, hi);
    FOR idx IN SELECT i.inhrelid::regclass FROM pg_inherits i
               JOIN pg_index x ON x.indexrelid = i.inhrelid
               WHERE i.inhparent = to_regclass('webhook_events_subjects_idx')
                 AND x.indrelid = format('%I', name)::regclass LOOP
        EXECUTE format('ALTER INDEX %s SET (fastupdate = on, gin_pending_list_limit = 64)', idx);
    END LOOP;
    RETURN name;
END
$$;
