-- leadflow's own tables. apalis-postgres keeps its tables in the `apalis` schema and its
-- migration history in apalis._sqlx_migrations, so the two histories never collide.

-- A webhook endpoint identity: its name, its workflow, and the SHA-256 of its bearer token.
CREATE TABLE hooks (
    id                    BIGSERIAL PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    workflow              TEXT NOT NULL,
    auto_callback         BOOLEAN NOT NULL DEFAULT TRUE,
    active                BOOLEAN NOT NULL DEFAULT TRUE,
    token_hash            BYTEA NOT NULL UNIQUE,
    -- the previous token keeps working until this time, so a rotation can be rolled out
    prev_token_hash       BYTEA,
    prev_token_expires_at TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX hooks_prev_token_hash ON hooks (prev_token_hash) WHERE prev_token_hash IS NOT NULL;

-- Every intake request, whatever its outcome. Credentials are never stored.
CREATE TABLE webhook_log (
    id              BIGSERIAL PRIMARY KEY,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    hook_id         BIGINT REFERENCES hooks (id),
    hook_name       TEXT,
    content_type    TEXT,
    body_size       BIGINT NOT NULL,
    body            BYTEA,
    headers         JSONB NOT NULL DEFAULT '{}',
    status_code     SMALLINT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'duplicate', 'error')),
    reason          TEXT,
    lead_id         UUID,
    idempotency_key TEXT
);
CREATE INDEX webhook_log_received_at ON webhook_log (received_at DESC, id DESC);
CREATE INDEX webhook_log_hook ON webhook_log (hook_id, received_at DESC);

CREATE TABLE leads (
    id           UUID PRIMARY KEY,
    hook_id      BIGINT NOT NULL REFERENCES hooks (id),
    workflow     TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- passed validation at intake (got a 2xx); only accepted leads count for duplicates
    accepted     BOOLEAN NOT NULL,
    -- the submission as received: documented fields and custom fields
    submission   JSONB NOT NULL,
    name         TEXT,
    phone_e164   TEXT,
    phone_region TEXT,
    email        TEXT,
    company      TEXT,
    auto_callback BOOLEAN NOT NULL
);
CREATE INDEX leads_received_at ON leads (received_at DESC, id DESC);
CREATE INDEX leads_phone ON leads (phone_e164, received_at) WHERE accepted;
CREATE INDEX leads_email ON leads (lower(email), received_at) WHERE accepted AND email IS NOT NULL;

-- One pass of a lead through its workflow. A replay is a new run of the same lead.
CREATE TABLE runs (
    id           UUID PRIMARY KEY,
    lead_id      UUID NOT NULL REFERENCES leads (id),
    workflow     TEXT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    team         TEXT,
    duplicate_of UUID REFERENCES leads (id),
    replay_of    UUID REFERENCES runs (id),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX runs_lead ON runs (lead_id, created_at);
CREATE INDEX runs_status ON runs (status, updated_at);

-- One execution of a step in a run; n counts the step's executions in the run.
CREATE TABLE steps (
    run_id       UUID NOT NULL REFERENCES runs (id),
    name         TEXT NOT NULL,
    n            INTEGER NOT NULL,
    job_id       TEXT,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'ok', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    -- clock time, so steps created in one transaction keep their order
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    next_run_at  TIMESTAMPTZ,
    output       JSONB,
    error        TEXT,
    PRIMARY KEY (run_id, name, n)
);

CREATE TABLE timeline (
    id      BIGSERIAL PRIMARY KEY,
    lead_id UUID NOT NULL REFERENCES leads (id),
    run_id  UUID REFERENCES runs (id),
    at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event   TEXT NOT NULL,
    actor   TEXT NOT NULL DEFAULT 'system',
    detail  JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_lead ON timeline (lead_id, id);

-- Idempotency-Key (or webhook-id) per hook: the first response is replayed to retries.
CREATE TABLE idempotency_keys (
    hook_id      BIGINT NOT NULL REFERENCES hooks (id),
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status_code  SMALLINT,
    response     JSONB,
    lead_id      UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (hook_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- Phones (E.164) and emails (lower case) that are never called.
CREATE TABLE blocklist (
    kind       TEXT NOT NULL CHECK (kind IN ('phone', 'email')),
    value      TEXT NOT NULL,
    note       TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);
