-- An event stored from a body an operator supplied (`rejected replay ID
-- --body FILE`), not the one ImgGo signed. Adding a column with a constant
-- default rewrites nothing.
ALTER TABLE webhook_events ADD COLUMN operator_supplied BOOLEAN NOT NULL DEFAULT false;
