-- description: pending jobs by concurrency key
-- The keyed claim reads a queue's pending jobs key by key (a loose index scan: each key's
-- best jobs up to its free places, never a full key's backlog) and its unkeyed pending
-- jobs as one more range of the same index (concurrency_key IS NULL, best first), so a
-- busy key's backlog ahead costs nothing. Partial on pending rows, as jobs_pending is.
-- Built without CONCURRENTLY: each migration runs in a transaction with its record
-- (chancy/store/pg/migrations.py), and CREATE INDEX CONCURRENTLY cannot run inside one.
-- The build takes a SHARE lock on the jobs table (reads and claims go on; pushes and
-- outcomes wait) for one read of the table and a sort of its pending rows only.

-- name: jobs_pending_by_key
CREATE INDEX {jobs_pending_by_key} ON {jobs} (queue, concurrency_key, priority DESC, id)
WHERE state = 'pending';
