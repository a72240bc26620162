-- description: jobs and workers

-- name: jobs
CREATE TABLE {jobs} (
    id uuid PRIMARY KEY,
    queue text NOT NULL,
    func text NOT NULL,
    args jsonb NOT NULL DEFAULT '[]',
    kwargs jsonb NOT NULL DEFAULT '{{}}',
    priority integer NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN
        ('pending', 'scheduled', 'running', 'retrying',
         'succeeded', 'failed', 'cancelled', 'expired')),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    taken_by text,
    unique_key text,
    limits jsonb NOT NULL DEFAULT '[]',
    backoff jsonb,
    meta jsonb NOT NULL DEFAULT '{{}}',
    result jsonb,
    errors jsonb NOT NULL DEFAULT '[]'
);

-- name: jobs_pending
-- The claim path reads only this index and the next; their predicates match the claim
-- query's filters exactly, so finished rows are never scanned.
CREATE INDEX {jobs_pending} ON {jobs} (queue, priority DESC, id) WHERE state = 'pending';

-- name: jobs_scheduled
CREATE INDEX {jobs_scheduled} ON {jobs} (queue, scheduled_at) WHERE state IN ('scheduled', 'retrying');

-- name: jobs_running
CREATE INDEX {jobs_running} ON {jobs} (taken_by) WHERE state = 'running';

-- name: jobs_unique
-- A unique key is unique among the live jobs only.
CREATE UNIQUE INDEX {jobs_unique} ON {jobs} (unique_key)
WHERE unique_key IS NOT NULL AND state IN ('pending', 'scheduled', 'running', 'retrying');

-- name: jobs_finished
CREATE INDEX {jobs_finished} ON {jobs} (completed_at) WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');

-- name: workers
CREATE TABLE {workers} (
    worker_id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL DEFAULT '{{}}',
    tags text[] NOT NULL DEFAULT '{{}}',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
