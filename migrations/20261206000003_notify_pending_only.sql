-- apalis's insert trigger announces every job inserted due, whatever its status. leadflow
-- inserts some jobs already settled by the transaction that creates them: a route job done in
-- qualify's transaction, a callback job claimed there for this process's worker
-- (src/steps/fused.rs). Announcing those would wake every idle worker for a fetch that finds
-- nothing. Only jobs a worker may fetch are announced. (An apalis upgrade that redefines the
-- function would bring the extra wake-ups back, not break anything.)
CREATE OR REPLACE FUNCTION apalis.notify_new_jobs() RETURNS TRIGGER AS $$
BEGIN
    IF NEW.run_at <= now() AND NEW.status = 'Pending' THEN
        PERFORM pg_notify(
            'apalis::job::insert',
            json_build_object(
                'job_type', NEW.job_type,
                'id', NEW.id,
                'run_at', NEW.run_at
            )::text
        );
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
