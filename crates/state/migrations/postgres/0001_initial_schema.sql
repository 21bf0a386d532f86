-- The first schema of a ferry workspace on PostgreSQL, in the current schema (search_path).
-- Timestamps are TIMESTAMPTZ and JSON is JSONB.

CREATE TABLE connections (
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    config        JSONB NOT NULL,
    -- 'encrypted' (value = base64(nonce || ciphertext)) or 'env_var' (value = variable name).
    secret_kind   TEXT,
    secret_value  TEXT,
    secret_hint   TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CHECK ((secret_kind IS NULL) = (secret_value IS NULL))
);

CREATE TABLE models (
    name        TEXT PRIMARY KEY,
    connection  TEXT NOT NULL REFERENCES connections (name),
    sql         TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE syncs (
    name         TEXT PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,
    -- Copied out of the spec so that foreign keys keep models and connections in use.
    model        TEXT NOT NULL REFERENCES models (name),
    destination  TEXT NOT NULL REFERENCES connections (name),
    spec         JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,
    sync              TEXT NOT NULL REFERENCES syncs (name),
    status            TEXT NOT NULL,
    full_resync       BOOLEAN NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    rows_total        BIGINT NOT NULL DEFAULT 0,
    created_count     BIGINT NOT NULL DEFAULT 0,
    updated_count     BIGINT NOT NULL DEFAULT 0,
    unchanged_count   BIGINT NOT NULL DEFAULT 0,
    not_found_count   BIGINT NOT NULL DEFAULT 0,
    rejected_count    BIGINT NOT NULL DEFAULT 0,
    failed_count      BIGINT NOT NULL DEFAULT 0,
    requests_count    BIGINT NOT NULL DEFAULT 0,
    error             TEXT
);
CREATE INDEX runs_by_sync ON runs (sync, id);
CREATE INDEX runs_by_status ON runs (sync, status);

CREATE TABLE run_records (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    row_number  BIGINT NOT NULL,
    key         TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    stripe_id   TEXT,
    reason      TEXT,
    request_id  TEXT,
    changes     JSONB,
    PRIMARY KEY (run_id, row_number)
);
CREATE INDEX run_records_by_outcome ON run_records (run_id, outcome, row_number);

CREATE TABLE snapshot (
    sync          TEXT NOT NULL REFERENCES syncs (name),
    key           TEXT NOT NULL,
    stripe_id     TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    payload       JSONB NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync, key)
);

CREATE TABLE pending_creates (
    sync             TEXT NOT NULL REFERENCES syncs (name),
    key              TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_body     TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sync, key)
);
