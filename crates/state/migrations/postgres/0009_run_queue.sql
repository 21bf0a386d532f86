-- The run queue; see the SQLite migration of the same number.

CREATE TABLE run_requests (
    id                 TEXT PRIMARY KEY,
    sync_name          TEXT NOT NULL,
    reason             TEXT NOT NULL,
    full_resync        BOOLEAN NOT NULL,
    allow_mass_retire  BOOLEAN NOT NULL,
    dedupe_key         TEXT UNIQUE,
    requested_at       TIMESTAMPTZ NOT NULL,
    not_before         TIMESTAMPTZ NOT NULL,
    claims             BIGINT NOT NULL DEFAULT 0,
    claimed_by         TEXT,
    lease_until        TIMESTAMPTZ,
    run_id             TEXT,
    cancel_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    finished_at        TIMESTAMPTZ,
    refusal_status     INTEGER,
    refusal_code       TEXT,
    refusal_message    TEXT
);
CREATE INDEX run_requests_pending ON run_requests (requested_at) WHERE finished_at IS NULL;
CREATE INDEX run_requests_by_run ON run_requests (run_id);
