-- A run walks a sync's snapshot in key order, reading each key's id and payload hash. Through
-- the primary key of a rowid table SQLite looked every row up in the table (a seek per key: a
-- third of a 1M-row preview's snapshot reading). Kept in its primary key's order (WITHOUT
-- ROWID), the walk reads the rows in sequence, and a write updates one B-tree instead of two.
CREATE TABLE snapshot_v4 (
    sync            TEXT NOT NULL REFERENCES syncs (name),
    object          TEXT NOT NULL,
    key             TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    payload_hash    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (sync, object, key)
) WITHOUT ROWID;
INSERT INTO snapshot_v4 (sync, object, key, destination_id, payload_hash, payload, updated_at)
    SELECT sync, object, key, destination_id, payload_hash, payload, updated_at FROM snapshot;
DROP TABLE snapshot;
ALTER TABLE snapshot_v4 RENAME TO snapshot;
