-- What operators need: paused queues, console sessions, and the indexes behind their
-- queries and actions.

-- A queue listed here is paused: workers stop claiming its jobs (within one poll interval)
-- until the row is deleted. A table rather than process state, so a pause survives restarts
-- and holds for every worker process on the database.
CREATE TABLE queue_pauses (
    queue     TEXT PRIMARY KEY,
    paused_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    paused_by TEXT NOT NULL
);

-- Browser console sessions. The cookie holds a random secret; only its SHA-256 is kept, so a
-- read of this table cannot be replayed as a login. Each session has its own CSRF token, and
-- belongs to the admin token it logged in with: changing that token ends every session.
CREATE TABLE console_sessions (
    token_hash        BYTEA PRIMARY KEY,
    actor             TEXT NOT NULL,
    csrf_token        TEXT NOT NULL,
    admin_fingerprint BYTEA NOT NULL,
    -- a one-time message for the next page (what the last action did)
    flash      TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

-- Operator actions start from a job id and find its step.
CREATE INDEX steps_job_id ON steps (job_id);

-- Job lists filter by queue and state and page by id; the queue overview groups by both.
CREATE INDEX leadflow_jobs_by_state ON apalis.jobs (job_type, status, id);

-- The webhook log filtered by outcome or hook, newest first.
CREATE INDEX webhook_log_outcome ON webhook_log (outcome, id DESC);
CREATE INDEX webhook_log_hook_name ON webhook_log (hook_name, id DESC);
