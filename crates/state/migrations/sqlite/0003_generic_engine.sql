-- The generic, bounded-memory engine (ferry 0.2):
-- * a sync's records are kept per object (snapshot and pending creates keyed by sync, object
--   and key), and the id Stripe gave a record is `destination_id`;
-- * a run counts its unchanged rows instead of storing a record for each, counts the rows it
--   never attempted, and says when it was last seen alive (a heartbeat);
-- * the key index: per destination account and object, the match keys (a lower-cased email,
--   an external id in metadata) of every record, and how far it has been kept up to date.
-- Existing workspaces synced Customers only, so their rows become object 'customer'.

CREATE TABLE snapshot_v3 (
    sync            TEXT NOT NULL REFERENCES syncs (name),
    object          TEXT NOT NULL,
    key             TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    payload_hash    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (sync, object, key)
);
INSERT INTO snapshot_v3 (sync, object, key, destination_id, payload_hash, payload, updated_at)
    SELECT sync, 'customer', key, stripe_id, payload_hash, payload, updated_at FROM snapshot;
DROP TABLE snapshot;
ALTER TABLE snapshot_v3 RENAME TO snapshot;

CREATE TABLE pending_creates_v3 (
    sync             TEXT NOT NULL REFERENCES syncs (name),
    object           TEXT NOT NULL,
    key              TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_body     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (sync, object, key)
);
INSERT INTO pending_creates_v3 (sync, object, key, idempotency_key, request_body, created_at)
    SELECT sync, 'customer', key, idempotency_key, request_body, created_at FROM pending_creates;
DROP TABLE pending_creates;
ALTER TABLE pending_creates_v3 RENAME TO pending_creates;

ALTER TABLE run_records RENAME COLUMN stripe_id TO destination_id;
ALTER TABLE runs ADD COLUMN not_attempted_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_seen_at TEXT;
CREATE INDEX runs_by_finish ON runs (finished_at);

-- `scope` names one destination account and object ("stripe https://api.stripe.com acct_1… customer").
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
    -- JSON array of the key names indexed ("email", "metadata.user_id").
    key_names        TEXT NOT NULL,
    built_at         TEXT NOT NULL,
    -- Unix seconds: every record created before this is in the index.
    created_through  INTEGER NOT NULL,
    -- Unix seconds: every change event before this is applied.
    events_through   INTEGER NOT NULL,
    refreshed_at     TEXT NOT NULL
);
