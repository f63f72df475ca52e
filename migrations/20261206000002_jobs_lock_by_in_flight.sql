-- apalis keeps `lock_by` on a job after it is done, so its index on lock_by grows with every
-- job a worker ever ran. Its acknowledgement query finds the acknowledged jobs with
-- `lock_by = <worker>` joined to their ids, and with that index the planner reads every job
-- the worker ever ran, on every acknowledgement: 27 ms at ~900 jobs, growing without bound
-- (auto_explain, bench pipeline). The queries that need lock_by (the rescue of a dead
-- worker's jobs, leadflow's hand-back at shutdown) only look at jobs in flight, so the index
-- keeps only those: it stays small, done jobs leave it, and the acknowledgement goes by the
-- primary key.
CREATE INDEX IF NOT EXISTS leadflow_jobs_in_flight_by_worker ON apalis.jobs (lock_by)
    WHERE status = 'Queued' OR status = 'Running';
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
