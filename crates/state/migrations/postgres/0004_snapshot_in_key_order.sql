-- A run walks a sync's snapshot in key order, reading each key's id and payload hash. This
-- index holds them in key order, so the walk can read the index alone (an index-only scan)
-- rather than visit the table for each key.
CREATE INDEX snapshot_walk ON snapshot (sync, object, key) INCLUDE (payload_hash, destination_id);
