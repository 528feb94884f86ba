-- The last message id issued under each node id, kept across holders: a
-- new holder starts above it even if its clock is behind the last one's.
ALTER TABLE node_leases ADD COLUMN last_id BIGINT NOT NULL DEFAULT 0;
