-- Reports read every device's touchpoints of a period: one range of this index per visitor.
-- Widened from (visitor_key, id) so that read needs the index alone — the rows themselves
-- are stored in time order, so a journey's rows are scattered over the whole table and
-- fetching each one cost a random page read (a report over a million touchpoints took
-- several times longer). Same name, same leading columns: journeys and first/last touch
-- use it as before, and a landing still updates one index on the visitor, not two.
DROP INDEX touchpoints_visitor;
CREATE INDEX touchpoints_visitor
    ON touchpoints (visitor_key, id, ts, channel, campaign, source, medium, creator_id);

-- Reports read raw parameters only of touchpoints naming a campaign tier (`c_tier`,
-- `utm_tier`, any `*_tier`): this partial index lists just those, so no report scans the
-- parameters of every touchpoint of its period. A landing without one adds no entry.
CREATE INDEX touchpoints_tiered ON touchpoints (id) WHERE instr(raw_params, '_tier"') > 0;
