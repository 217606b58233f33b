-- The validation verdict of each event (CONTRACT §12): its pattern's JSON
-- Schema applied to the extracted data before redaction. `valid` is NULL
-- when the pattern has no schema (and for every event stored before this
-- migration), so `GET /v1/events?valid=` can filter by it;
-- `validation_errors` is a JSON array of {"path","keyword"} (never a
-- value from the delivery), NULL when there are none. Nullable columns
-- without a default: adding them rewrites nothing.
ALTER TABLE webhook_events
    ADD COLUMN valid BOOLEAN,
    ADD COLUMN validation_errors TEXT;
