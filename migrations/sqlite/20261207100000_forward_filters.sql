-- Each destination's filters (`events`, `valid` of `[forward.NAME]`), as
-- its last start-up registered them, so that retention counts as missed
-- (`imggo_forward_missed_total`) only the events the destination would
-- have forwarded. `events`: the names, newline-separated, NULL = all.
-- `valid_filter`: 'any', 'true' or 'false'.
ALTER TABLE forward_positions ADD COLUMN events TEXT;
ALTER TABLE forward_positions ADD COLUMN valid_filter TEXT NOT NULL DEFAULT 'any';
