-- The run queue: every run `ferry serve` starts (asked for through the API or the UI, or due on
-- a schedule) is first a request here, which whichever server process is free claims. A claim
-- is a lease its holder renews while the run lasts; a process that dies stops renewing, and
-- another one claims the request again and resumes the run. Finished requests are kept a day:
-- `dedupe_key` makes a scheduled time queue one run however many servers see it due.

CREATE TABLE run_requests (
    id                 TEXT PRIMARY KEY,
    -- No foreign key: removing a sync removes its requests itself.
    sync_name          TEXT NOT NULL,
    -- 'api', 'ui' or 'schedule'.
    reason             TEXT NOT NULL,
    full_resync        INTEGER NOT NULL,
    allow_mass_retire  INTEGER NOT NULL,
    dedupe_key         TEXT UNIQUE,
    requested_at       TEXT NOT NULL,
    -- Not claimed before this (a request put back waits a little).
    not_before         TEXT NOT NULL,
    -- How many times it was claimed: more than once means a worker died or stood aside.
    claims             INTEGER NOT NULL DEFAULT 0,
    claimed_by         TEXT,
    lease_until        TEXT,
    -- The run it started, the last one when it was resumed.
    run_id             TEXT,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    finished_at        TEXT,
    -- Why it did not start, as the API answered it: HTTP status, error code, message.
    refusal_status     INTEGER,
    refusal_code       TEXT,
    refusal_message    TEXT
);
CREATE INDEX run_requests_pending ON run_requests (requested_at) WHERE finished_at IS NULL;
CREATE INDEX run_requests_by_run ON run_requests (run_id);
