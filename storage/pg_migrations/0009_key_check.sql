-- A check value of each store instance's identity.secret (gateway/keys.py key_check: HKDF
-- under a label of its own, not the secret nor any key the gateway uses): two nodes syncing
-- under different secrets refuse each other's visitor cookies and keep one user under two
-- keys, which an erasure through one does not find in the other's rows (storage/sync.py says
-- so). Empty for instances that synced before this migration, or without a secret given.
ALTER TABLE node_instances ADD COLUMN key_check text;
