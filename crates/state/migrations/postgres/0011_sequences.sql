-- Sequences and their runs; see the SQLite migration of the same number.

CREATE TABLE sequences (
    name        TEXT PRIMARY KEY,
    spec        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE sequence_runs (
    id             TEXT PRIMARY KEY,
    sequence_name  TEXT NOT NULL REFERENCES sequences (name),
    spec           JSONB NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT NOT NULL,
    driver         TEXT NOT NULL,
    step           BIGINT NOT NULL DEFAULT 0,
    run_ids        JSONB NOT NULL DEFAULT '[]',
    message        TEXT,
    dedupe_key     TEXT UNIQUE,
    version        BIGINT NOT NULL DEFAULT 0,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX sequence_runs_by_sequence ON sequence_runs (sequence_name, id COLLATE "C");
CREATE INDEX sequence_runs_running ON sequence_runs (id COLLATE "C") WHERE status = 'running';
