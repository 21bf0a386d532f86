-- API tokens for `ferry server`. Only the SHA-256 (lowercase hex) of each token is stored; the
-- clear token is shown once, when it is created.

CREATE TABLE api_tokens (
    name          TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    -- The first 12 characters of the token ("ferry_ab12cd"), to recognise it in listings.
    prefix        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ
);
