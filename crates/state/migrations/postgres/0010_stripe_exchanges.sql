-- Each attempt of each request ferry sent to Stripe for a record of a run; see the SQLite
-- migration of the same number.

CREATE TABLE stripe_exchanges (
    run_id           TEXT NOT NULL REFERENCES runs (id),
    row_number       BIGINT NOT NULL,
    sequence         BIGINT NOT NULL,
    sent_at          TIMESTAMPTZ NOT NULL,
    method           TEXT NOT NULL,
    path             TEXT NOT NULL,
    idempotency_key  TEXT,
    request_body     TEXT,
    status           INTEGER,
    response_body    TEXT,
    request_id       TEXT,
    error            TEXT,
    duration_ms      BIGINT NOT NULL,
    PRIMARY KEY (run_id, sequence)
);
CREATE INDEX stripe_exchanges_by_row ON stripe_exchanges (run_id, row_number, sequence);
CREATE INDEX stripe_exchanges_by_sent_at ON stripe_exchanges (sent_at);
