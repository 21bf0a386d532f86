-- API tokens for `ferry server`. Only the SHA-256 (lowercase hex) of each token is stored; the
-- clear token is shown once, when it is created. Timestamps are RFC 3339 text in UTC with
-- exactly six fractional digits, as in 0001.

CREATE TABLE api_tokens (
    name          TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    -- The first 12 characters of the token ("ferry_ab12cd"), to recognise it in listings.
    prefix        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT
);
