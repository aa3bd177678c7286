-- The marketing channel of each touchpoint (gateway/channels.py): set when the touchpoint is
-- recorded, recomputed by `gateway reclassify` after a rule change. NULL: recorded before
-- channels existed (run `gateway reclassify` to fill it in).
ALTER TABLE touchpoints ADD COLUMN channel TEXT;
-- Reports group by channel over a period.
CREATE INDEX touchpoints_channel ON touchpoints (channel, id);
