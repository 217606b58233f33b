-- The validation verdict of each event (CONTRACT §12); see the Postgres
-- migration. `valid`: 1, 0 or NULL.
ALTER TABLE webhook_events ADD COLUMN valid INTEGER;
ALTER TABLE webhook_events ADD COLUMN validation_errors TEXT;
