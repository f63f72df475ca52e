-- apalis-postgres 1.0's first migration created `lidx` (lock_by) and `unique_job_id` (id);
-- a later one added idx_apalis_jobs_lock_by, and the primary key already covers id. Every
-- job row is written three times (push, claim, acknowledgement), each time into every index
-- (status is indexed, so no update is HOT): the two copies cost two index writes in seven,
-- for nothing. Dropped only where the index that replaces each one exists.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_indexes
               WHERE schemaname = 'apalis' AND indexname = 'idx_apalis_jobs_lock_by') THEN
        DROP INDEX IF EXISTS apalis.lidx;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_indexes
               WHERE schemaname = 'apalis' AND indexname = 'jobs_pkey') THEN
        DROP INDEX IF EXISTS apalis.unique_job_id;
    END IF;
END
$$;

-- The hot tables churn: each lead updates its jobs, steps and run several times. Vacuum them
-- after 2% of their rows are dead rather than the default 20%, so that claims and lookups
-- do not wade through dead versions on a large table.
ALTER TABLE apalis.jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE steps SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE runs SET (autovacuum_vacuum_scale_factor = 0.02);
