-- Web UI sessions and shared request budgets; see the SQLite migration of the same number.

CREATE TABLE ui_sessions (
    -- Lowercase hex of SHA-256(session id); the id itself is never stored.
    id_hash       TEXT PRIMARY KEY,
    -- The API token the session signed in with.
    token_name    TEXT NOT NULL,
    -- Sent back with every request that changes something.
    csrf          TEXT NOT NULL,
    signed_in_at  TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX ui_sessions_by_last_seen ON ui_sessions (last_seen_at);

CREATE TABLE rate_budgets (
    budget_key    TEXT PRIMARY KEY,
    -- The first moment no reservation holds yet, by the database server's clock (TIMESTAMPTZ
    -- keeps microseconds), so processes on several machines agree without synchronized clocks.
    next_free_at  TIMESTAMPTZ NOT NULL
);
