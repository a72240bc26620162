-- description: celery result backend: saved groups and chord counters; infinite job times made loadable

-- name: celery_groups
-- GroupResult.save(): the group's result tuple in the backend's serializer, until
-- expires_at (Celery's result_expires; NULL: kept until deleted).
CREATE TABLE {celery_groups} (
    id text PRIMARY KEY,
    payload bytea NOT NULL,
    expires_at timestamptz
);

-- name: celery_groups_expiry
CREATE INDEX {celery_groups_expiry} ON {celery_groups} (expires_at) WHERE expires_at IS NOT NULL;

-- name: celery_chords
-- One row per chord applied through the backend, keyed by its header's group id: size
-- from set_chord_size (NULL: the header parts' own chord_size), added by add_to_chord,
-- done the header parts returned so far. The part that completes it claims the body
-- (claim, until claimed_until: another may take over a claim whose holder died) and
-- fired_at marks the body sent, so it is sent once.
CREATE TABLE {celery_chords} (
    group_id text PRIMARY KEY,
    size integer CHECK (size >= 0),
    added integer NOT NULL DEFAULT 0,
    done integer NOT NULL DEFAULT 0,
    claim text,
    claimed_until timestamptz,
    fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- name: celery_chords_fired
CREATE INDEX {celery_chords_fired} ON {celery_chords} (fired_at) WHERE fired_at IS NOT NULL;

-- name: celery_chord_parts
-- Each header part's outcome, once per (task id, index in the header): a part run twice
-- (redelivered after a lost worker) counts once.
CREATE TABLE {celery_chord_parts} (
    group_id text NOT NULL REFERENCES {celery_chords} (group_id) ON DELETE CASCADE,
    task_id text NOT NULL,
    position bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (group_id, task_id, position)
);

-- name: loadable_job_times
-- Rows an earlier result backend parked at 'infinity' could not be loaded by any reader
-- ('timestamp too large'): each job time at +/-infinity becomes the last/first time every
-- reader can load (Python's datetime stops at years 9999 and 1, and a session time zone
-- up to 14 hours away must not cross them), so 'never' stays never due and '-infinity'
-- stays due.
UPDATE {jobs} SET
    scheduled_at = CASE WHEN scheduled_at = 'infinity' THEN timestamptz '9999-12-31 00:00:00+00'
                        WHEN scheduled_at = '-infinity' THEN timestamptz '0001-01-02 00:00:00+00'
                        ELSE scheduled_at END,
    expires_at = CASE WHEN expires_at = 'infinity' THEN timestamptz '9999-12-31 00:00:00+00'
                      WHEN expires_at = '-infinity' THEN timestamptz '0001-01-02 00:00:00+00'
                      ELSE expires_at END,
    created_at = CASE WHEN created_at = 'infinity' THEN timestamptz '9999-12-31 00:00:00+00'
                      WHEN created_at = '-infinity' THEN timestamptz '0001-01-02 00:00:00+00'
                      ELSE created_at END,
    started_at = CASE WHEN started_at = 'infinity' THEN timestamptz '9999-12-31 00:00:00+00'
                      WHEN started_at = '-infinity' THEN timestamptz '0001-01-02 00:00:00+00'
                      ELSE started_at END,
    completed_at = CASE WHEN completed_at = 'infinity' THEN timestamptz '9999-12-31 00:00:00+00'
                        WHEN completed_at = '-infinity' THEN timestamptz '0001-01-02 00:00:00+00'
                        ELSE completed_at END
WHERE NOT isfinite(scheduled_at) OR NOT isfinite(expires_at) OR NOT isfinite(created_at)
   OR NOT isfinite(started_at) OR NOT isfinite(completed_at);
