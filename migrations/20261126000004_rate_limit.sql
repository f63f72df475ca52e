-- A per-hook request limit; NULL takes the service default (LEADFLOW_RATE_LIMIT_PER_MIN).
ALTER TABLE hooks ADD COLUMN rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0);
