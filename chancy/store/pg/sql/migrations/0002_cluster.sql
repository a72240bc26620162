-- description: cluster: queue settings, worker liveness, cron schedules

-- name: queues
-- Runtime queue settings; a queue without a row runs on its code's settings.
-- paused_until 'infinity' is an open-ended pause. rate_starts holds the claim times of
-- the last rate_limit jobs started (a sliding window, see the claim).
CREATE TABLE {queues} (
    name text PRIMARY KEY,
    concurrency integer CHECK (concurrency >= 1),
    paused_until timestamptz,
    rate_limit integer CHECK (rate_limit >= 1),
    rate_period float8 CHECK (rate_period > 0),
    rate_starts timestamptz[] NOT NULL DEFAULT '{{}}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
);

-- name: workers_expiry_column
-- Each worker states by when it will have heartbeated again; past that it is dead.
ALTER TABLE {workers} ADD COLUMN expires_at timestamptz NOT NULL DEFAULT now() + interval '30 seconds';

-- name: workers_expiry
CREATE INDEX {workers_expiry} ON {workers} (expires_at);

-- name: cron
CREATE TABLE {cron} (
    name text PRIMARY KEY,
    job jsonb NOT NULL,
    cron text,
    every float8 CHECK (every > 0),
    timezone text NOT NULL DEFAULT 'UTC',
    expires_in float8 CHECK (expires_in > 0),
    next_fire_at timestamptz NOT NULL,
    last_fired_at timestamptz,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every IS NULL))
);

-- name: cron_due
CREATE INDEX {cron_due} ON {cron} (next_fire_at) WHERE enabled;
