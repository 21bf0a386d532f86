-- Two things several ferry processes on one workspace must share:
-- * the web UI's sign-in sessions, so a restarted `ferry server`, or another one on the same
--   workspace, signs nobody out. Only the SHA-256 of a session id (the cookie) is stored: the
--   database alone does not let anyone sign in.
-- * request budgets: for each budget (a Stripe account, or an account and an endpoint) the
--   moment its next request slot is free, so processes writing into one account together stay
--   under the account's rate limit.
-- Timestamps are RFC 3339 text in UTC with exactly six fractional digits, as in 0001.

CREATE TABLE ui_sessions (
    -- Lowercase hex of SHA-256(session id).
    id_hash       TEXT PRIMARY KEY,
    -- The API token the session signed in with.
    token_name    TEXT NOT NULL,
    -- Sent back with every request that changes something.
    csrf          TEXT NOT NULL,
    signed_in_at  TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
);
CREATE INDEX ui_sessions_by_last_seen ON ui_sessions (last_seen_at);

CREATE TABLE rate_budgets (
    budget_key    TEXT PRIMARY KEY,
    -- The first moment no reservation holds yet (microseconds).
    next_free_at  TEXT NOT NULL
);
