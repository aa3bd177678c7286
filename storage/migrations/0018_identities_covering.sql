-- Each conversion's devices are found through the bindings, one way and then the other: its
-- visitor's users (by visitor_key), then every visitor of those users (by user_key). Widened
-- from (user_key, id) and (visitor_key, id) by the other key, so each binding found is read
-- from the index alone: without it, every one cost a lookup of its table row, about 40 % of
-- the dashboard's count of the conversions its top campaigns and creators touched. Same
-- names, same leading columns: the lookups by key (erasure, journeys, sinks) and their order
-- by id stay as they were, and a binding still updates two indexes.
DROP INDEX identities_user;
CREATE INDEX identities_user ON identities (user_key, id, visitor_key);
DROP INDEX identities_visitor;
CREATE INDEX identities_visitor ON identities (visitor_key, id, user_key);
