-- The generic, bounded-memory engine (ferry 0.2); see the SQLite migration of the same number.
-- Keys are compared byte by byte (COLLATE "C") so that the snapshot streams in the order the
-- engine sorts the model's keys, and its primary key index serves that order.

ALTER TABLE snapshot RENAME COLUMN stripe_id TO destination_id;
ALTER TABLE snapshot ADD COLUMN object TEXT NOT NULL DEFAULT 'customer';
ALTER TABLE snapshot ALTER COLUMN object DROP DEFAULT;
ALTER TABLE snapshot ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE snapshot DROP CONSTRAINT snapshot_pkey;
ALTER TABLE snapshot ADD PRIMARY KEY (sync, object, key);

ALTER TABLE pending_creates ADD COLUMN object TEXT NOT NULL DEFAULT 'customer';
ALTER TABLE pending_creates ALTER COLUMN object DROP DEFAULT;
ALTER TABLE pending_creates DROP CONSTRAINT pending_creates_pkey;
ALTER TABLE pending_creates ADD PRIMARY KEY (sync, object, key);

ALTER TABLE run_records RENAME COLUMN stripe_id TO destination_id;
-- JSON kept as the engine wrote it (canonical text), as SQLite keeps it: nothing queries inside.
ALTER TABLE run_records ALTER COLUMN changes TYPE TEXT USING changes::text;
ALTER TABLE snapshot ALTER COLUMN payload TYPE TEXT USING payload::text;
ALTER TABLE runs ADD COLUMN not_attempted_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_seen_at TIMESTAMPTZ;
CREATE INDEX runs_by_finish ON runs (finished_at);

CREATE TABLE key_index (
    scope           TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    key_value       TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    PRIMARY KEY (scope, key_name, key_value, destination_id)
);
CREATE INDEX key_index_by_id ON key_index (scope, destination_id);

CREATE TABLE key_index_state (
    scope            TEXT PRIMARY KEY,
    key_names        JSONB NOT NULL,
    built_at         TIMESTAMPTZ NOT NULL,
    created_through  BIGINT NOT NULL,
    events_through   BIGINT NOT NULL,
    refreshed_at     TIMESTAMPTZ NOT NULL
);
