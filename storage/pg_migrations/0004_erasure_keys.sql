-- An erasure's other keys (local migration 0010): the user's rows kept under an earlier
-- identity.user_id_storage mode are erased centrally too. Nodes that do not send the
-- column yet erase under their one key, as before.
ALTER TABLE erasures ADD COLUMN also_keys jsonb NOT NULL DEFAULT '[]';
