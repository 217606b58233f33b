-- Erasure notices name, per destination, only the erased events that
-- destination forwarded or may have had in flight (CONTRACT §11): its
-- filters admit them and they lie at or before its position plus one relay
-- batch. The lists are chosen in the erasure's transaction (the events are
-- gone after it); a destination with an empty list has no row and gets no
-- notice. `forward_notices.event_ids` is no longer read: notices written
-- before this migration keep their whole list for every destination.
CREATE TABLE forward_notice_ids (
    destination TEXT   NOT NULL,
    notice      BIGINT NOT NULL REFERENCES forward_notices (id) ON DELETE CASCADE,
    event_ids   TEXT   NOT NULL,
    PRIMARY KEY (destination, notice)
);
CREATE INDEX forward_notice_ids_notice_idx ON forward_notice_ids (notice);
INSERT INTO forward_notice_ids (destination, notice, event_ids)
SELECT d.destination, n.id, n.event_ids
FROM forward_notices n CROSS JOIN forward_positions d
WHERE n.event_ids <> '';
