-- Sequences: named, ordered lists of syncs run one after another (products, then prices, then
-- invoices). A sequence's steps live in its spec (JSON), not in foreign keys: the store refuses
-- to remove a sync a sequence names.

CREATE TABLE sequences (
    name        TEXT PRIMARY KEY,
    -- JSON: steps, stop_when_rejected_over_percent, schedule.
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Each run of a sequence, driven step by step by whichever server process (or `ferry sequence
-- run`) advances it. `version` is the compare-and-set token: an advance names the version it
-- read, and only one of several racing processes moves the run on.
CREATE TABLE sequence_runs (
    id             TEXT PRIMARY KEY,
    -- Removing a sequence removes its runs itself, in the same transaction.
    sequence_name  TEXT NOT NULL REFERENCES sequences (name),
    -- The sequence's spec as it was when the run started (JSON).
    spec           TEXT NOT NULL,
    -- 'running', 'completed', 'failed', 'stopped' or 'interrupted'.
    status         TEXT NOT NULL,
    -- Who asked: 'api', 'ui', 'schedule', 'cli' or 'trigger'.
    reason         TEXT NOT NULL,
    -- 'queue' (the servers) or 'cli' (a `ferry sequence run` process).
    driver         TEXT NOT NULL,
    -- The index of the step running now (the last one run, once finished).
    step           INTEGER NOT NULL DEFAULT 0,
    -- JSON array: the run id of each step started so far, in step order.
    run_ids        TEXT NOT NULL DEFAULT '[]',
    message        TEXT,
    -- At most one run ever holds a given key (a scheduled time).
    dedupe_key     TEXT UNIQUE,
    version        INTEGER NOT NULL DEFAULT 0,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    updated_at     TEXT NOT NULL
);
-- A sequence's runs, newest first.
CREATE INDEX sequence_runs_by_sequence ON sequence_runs (sequence_name, id);
-- The runs still going, which the servers drive.
CREATE INDEX sequence_runs_running ON sequence_runs (id) WHERE status = 'running';
