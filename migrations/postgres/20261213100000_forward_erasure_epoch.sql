-- The relays of one replica share their reads of the feed (see
-- src/forward/shared.rs): what one relay read and opened, the others
-- send from memory. An event removed after it was read must not go out
-- of that memory, so every transaction that deletes events (an erasure
-- by subject or by job, from any replica of any release, or a DELETE or
-- TRUNCATE by hand) counts up this epoch, and a relay serves from memory
-- only what was read under the epoch it reads now. Retention counts it
-- up after each partition it detaches (src/store/partitions.rs).
CREATE TABLE forward_erasure_epoch (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint NOT NULL DEFAULT 0,
    -- The transaction that last counted: one count per transaction.
    tx xid8
);
INSERT INTO forward_erasure_epoch DEFAULT VALUES;

CREATE FUNCTION imggo_count_erasure() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE forward_erasure_epoch SET epoch = epoch + 1, tx = pg_current_xact_id()
    WHERE tx IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;

-- Per row, so that Postgres clones it onto every partition, those made
-- later included: a DELETE naming one partition counts as well as one
-- naming the table. Only the first row of a transaction writes.
CREATE TRIGGER webhook_events_erasure_epoch
    AFTER DELETE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION imggo_count_erasure();

CREATE TRIGGER webhook_events_truncate_epoch
    AFTER TRUNCATE ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION imggo_count_erasure();
