-- An attempt whose fate is unknown (`placing` or `unknown`, no call id) asks the provider
-- whether its call went out before it may be counted lost: how many times it asked, and
-- when it may ask again after the provider could not answer (at most once per backoff step).
ALTER TABLE callback_attempts ADD COLUMN lookups INTEGER NOT NULL DEFAULT 0;
ALTER TABLE callback_attempts ADD COLUMN next_lookup_at TIMESTAMPTZ;
