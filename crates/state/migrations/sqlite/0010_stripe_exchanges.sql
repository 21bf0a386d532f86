-- Each attempt of each request ferry sent to Stripe for a record of a run, as sent and as
-- answered: the record's debugger. Written with the batch that settles the record, so a record
-- the UI shows always has its requests; deleted with its run, and earlier by age (bodies make
-- this the largest table).

CREATE TABLE stripe_exchanges (
    run_id           TEXT NOT NULL REFERENCES runs (id),
    row_number       INTEGER NOT NULL,
    -- Assigned by the engine, unique within the run: a retried commit repeats it and is ignored.
    sequence         INTEGER NOT NULL,
    sent_at          TEXT NOT NULL,
    method           TEXT NOT NULL,
    -- The path and query, without the host.
    path             TEXT NOT NULL,
    idempotency_key  TEXT,
    request_body     TEXT,
    -- NULL when no answer came (transport error, timeout); `error` says why.
    status           INTEGER,
    response_body    TEXT,
    request_id       TEXT,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    PRIMARY KEY (run_id, sequence)
);
-- The debugger lists one record's exchanges.
CREATE INDEX stripe_exchanges_by_row ON stripe_exchanges (run_id, row_number, sequence);
-- Pruning by age reads only the old ones rather than the whole table.
CREATE INDEX stripe_exchanges_by_sent_at ON stripe_exchanges (sent_at);
