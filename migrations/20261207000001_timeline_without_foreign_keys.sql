-- The timeline is an append-only log that only leadflow writes, in the transaction of the
-- event it records, and leads and runs are never deleted. Its two foreign keys cost more
-- than they protect: a lead writes about ten timeline rows, and each checked both keys (a
-- query on leads and one on runs, each taking a KEY SHARE row lock, WAL-logged), about two
-- thirds of all foreign-key checks and ~5% of the machine's CPU at 200 leads/s (perf:
-- AfterTriggerEndQuery). The indexes stay; the other tables keep their keys.
ALTER TABLE timeline DROP CONSTRAINT IF EXISTS timeline_lead_id_fkey;
ALTER TABLE timeline DROP CONSTRAINT IF EXISTS timeline_run_id_fkey;
