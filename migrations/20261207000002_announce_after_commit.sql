-- A transaction that sets leadflow.announce to 'after_commit' announces its new jobs itself,
-- once it has committed (src/announce.rs): a NOTIFY takes a database-wide lock from the start
-- of its transaction's commit until the commit is durable, so intake transactions that each
-- notified committed one at a time, one WAL flush per lead. The trigger stays quiet for them.
CREATE OR REPLACE FUNCTION apalis.notify_new_jobs() RETURNS TRIGGER AS $$
BEGIN
    IF NEW.run_at <= now() AND NEW.status = 'Pending'
       AND current_setting('leadflow.announce', true) IS DISTINCT FROM 'after_commit' THEN
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
