-- Alerts and lifecycle webhooks:
-- * the alerts each sync has raised and not resolved yet, one row per condition, so a condition
--   that lasts is told once and its end is told once;
-- * the deliveries of events to alert channels: each event's JSON text as it is sent on every
--   attempt, whether it is still to be tried (and when), was delivered or was given up, and what
--   the channel last answered;
-- * workspace settings: a few JSON values by key (the default alert settings of syncs).
-- Timestamps are RFC 3339 text in UTC with exactly six fractional digits, as in 0001.

CREATE TABLE raised_alerts (
    sync_name  TEXT NOT NULL REFERENCES syncs (name),
    -- 'run_failed', 'rejected_rows', 'slow_run' or 'row_count_drop'.
    condition  TEXT NOT NULL,
    message    TEXT NOT NULL,
    raised_at  TEXT NOT NULL,
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
    -- Kept as text, byte for byte: a webhook's signature covers exactly these bytes.
    payload          TEXT NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    -- Set only while pending.
    next_attempt_at  TEXT,
    last_attempt_at  TEXT,
    -- The last attempt's HTTP status or SMTP reply code, and its answer (a body or the error).
    answer_status    INTEGER,
    answer           TEXT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_by_sync ON deliveries (sync_name, created_at);

CREATE TABLE workspace_settings (
    key    TEXT PRIMARY KEY,
    -- JSON text.
    value  TEXT NOT NULL
);
