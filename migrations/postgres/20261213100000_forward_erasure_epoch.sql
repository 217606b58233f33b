-- The relays of one replica share their reads of the feed (see
-- src/forward/shared.rs): what one relay read and opened, the others
-- send from memory. An event deleted after it was read must not go out
-- of that memory, so every DELETE on webhook_events (erasure by subject or
-- by job, from any replica of any release) counts up this epoch in its
-- own transaction, and a relay serves from memory only what was read
-- under the epoch it reads now. Retention drops partitions instead of
-- deleting; what it removes is kept out by the age bound every read has.
CREATE TABLE forward_erasure_epoch (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint NOT NULL DEFAULT 0
);
INSERT INTO forward_erasure_epoch DEFAULT VALUES;

CREATE FUNCTION imggo_count_erasure() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE forward_erasure_epoch SET epoch = epoch + 1;
    RETURN NULL;
END
$$;

-- Per statement: an erasure deleting a thousand events counts once. On the
-- partitioned parent it fires for every DELETE that names webhook_events.
CREATE TRIGGER webhook_events_erasure_epoch
    AFTER DELETE ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION imggo_count_erasure();
