-- An event stored from a body an operator supplied (`rejected replay ID
-- --body FILE`), not the one ImgGo signed. 0 = no, 1 = yes.
ALTER TABLE webhook_events ADD COLUMN operator_supplied INTEGER NOT NULL DEFAULT 0;
