-- Mirror: records retired because their rows left the model.
ALTER TABLE runs ADD COLUMN retired_count INTEGER NOT NULL DEFAULT 0;
