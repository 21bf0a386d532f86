-- Alerts and lifecycle webhooks; see the SQLite migration of the same number.

CREATE TABLE raised_alerts (
    sync_name  TEXT NOT NULL REFERENCES syncs (name),
    -- 'run_failed', 'rejected_rows', 'slow_run' or 'row_count_drop'.
    condition  TEXT NOT NULL,
    message    TEXT NOT NULL,
    raised_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync_name, condition)
);

-- No foreign key to syncs: a delivery outlives its sync, as the history of what was sent.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    sync_name        TEXT NOT NULL,
    run_id           TEXT,
    -- The alert channel's connection name.
    channel          TEXT NOT NULL,
    -- TEXT, not JSONB: kept byte for byte, since a webhook's signature covers exactly these bytes.
    payload          TEXT NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    -- Set only while pending.
    next_attempt_at  TIMESTAMPTZ,
    last_attempt_at  TIMESTAMPTZ,
    -- The last attempt's HTTP status or SMTP reply code, and its answer (a body or the error).
    answer_status    INTEGER,
    answer           TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_sync ON deliveries (sync_name, created_at);

CREATE TABLE workspace_settings (
    key    TEXT PRIMARY KEY,
    value  JSONB NOT NULL
);
