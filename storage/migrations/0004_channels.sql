-- The marketing channel of each touchpoint (gateway/channels.py): set when the touchpoint is
-- recorded, recomputed by `gateway reclassify` after a rule change. NULL: recorded before
-- channels existed (run `gateway reclassify` to fill it in).
ALTER TABLE touchpoints ADD COLUMN channel TEXT;
-- No index on it: reports read a period (an id range) and group in it, and every index
-- costs each landing's insert.
