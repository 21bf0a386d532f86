-- Pausing a sync stops its schedule (and orchestrators' triggers) without changing its spec;
-- resuming starts the schedule afresh from that moment.
ALTER TABLE syncs ADD COLUMN paused_at TEXT;
ALTER TABLE syncs ADD COLUMN resumed_at TEXT;
