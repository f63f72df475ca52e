-- The callback step: one row per call attempt, written before the provider is called, so a
-- redelivered job can see that a call may already be out and never place a second one.

-- A callback step can wait (for its time, or for the outcome of its call) without ending.
ALTER TABLE steps DROP CONSTRAINT steps_status_check;
ALTER TABLE steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('pending', 'retrying', 'waiting', 'ok', 'failed', 'cancelled'));
-- A waiting step's follow-up jobs are keyed run:{run}:{step}:{n}:wait:{waits}.
ALTER TABLE steps ADD COLUMN waits INTEGER NOT NULL DEFAULT 0;

-- When the run's next call is due and what set that time (team hours, lead quiet hours, the
-- stagger, or a retry delay).
ALTER TABLE runs ADD COLUMN scheduled_for TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN schedule_rule TEXT;

CREATE TABLE callback_attempts (
    id               UUID PRIMARY KEY,
    run_id           UUID NOT NULL REFERENCES runs (id),
    lead_id          UUID NOT NULL REFERENCES leads (id),
    -- the attempt's number in its run, from 1
    n                INTEGER NOT NULL,
    -- the callback step execution that owns it
    step_n           INTEGER NOT NULL,
    team             TEXT NOT NULL,
    provider         TEXT NOT NULL,
    -- placing: written, the provider may or may not have the call (never re-sent blindly)
    -- retry: the provider did not take it (connection failure, 5xx): safe to send again
    -- placed: the provider returned a call id
    -- unknown: sent, but no answer came back: the call may be out
    -- done: the outcome is known
    state            TEXT NOT NULL CHECK (state IN ('placing', 'retry', 'placed', 'unknown', 'done')),
    scheduled_for    TIMESTAMPTZ NOT NULL,
    lead_zone        TEXT,
    zone_rule        TEXT NOT NULL,
    placed_at        TIMESTAMPTZ,
    provider_call_id TEXT,
    -- the furthest status seen; statuses only move forward
    call_status      TEXT,
    status_rank      SMALLINT NOT NULL DEFAULT -1,
    answered_by      TEXT,
    -- called | busy | no-answer | machine | unreachable | failed | canceled | lost | refused
    outcome          TEXT,
    error            TEXT,
    place_errors     INTEGER NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (run_id, n),
    UNIQUE (run_id, step_n)
);
CREATE UNIQUE INDEX callback_attempts_call ON callback_attempts (provider_call_id)
    WHERE provider_call_id IS NOT NULL;
CREATE INDEX callback_attempts_lead ON callback_attempts (lead_id, placed_at);

-- Stagger: how many first calls are already queued at a team's opening.
CREATE TABLE callback_slots (
    team    TEXT NOT NULL,
    opening TIMESTAMPTZ NOT NULL,
    taken   INTEGER NOT NULL,
    PRIMARY KEY (team, opening)
);
