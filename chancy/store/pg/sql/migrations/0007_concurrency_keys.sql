-- description: per-key concurrency limits
-- A job may name a concurrency key and a limit: at most that many jobs of its queue with
-- the same key run at once, across every worker (the keyed claim in jobs.sql). Applies on
-- a live table: nullable columns without a default change no row, and both indexes are
-- partial on sets that are empty until keyed jobs are pushed (each build still reads the
-- table once, while the migration's lock is held).

-- name: concurrency_key_column
ALTER TABLE {jobs} ADD COLUMN concurrency_key text;

-- name: concurrency_column
-- The job's limit: running jobs of its key and queue it may start beside.
ALTER TABLE {jobs} ADD COLUMN concurrency integer;

-- name: jobs_keyed_running
-- Counts the running jobs of one key of a queue (the keyed claim, per candidate).
CREATE INDEX {jobs_keyed_running} ON {jobs} (queue, concurrency_key)
WHERE state = 'running' AND concurrency_key IS NOT NULL;

-- name: jobs_keyed_waiting
-- Whether a queue has keyed jobs waiting (what sends its claims down the keyed path).
CREATE INDEX {jobs_keyed_waiting} ON {jobs} (queue, scheduled_at)
WHERE concurrency_key IS NOT NULL AND state IN ('scheduled', 'retrying', 'pending');
