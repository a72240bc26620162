-- The worker's own statements: registration and heartbeat (on the database clock), the
-- start of prefetched jobs, deregistration, and the backoff of jobs recovered from a
-- lost worker.

-- name: heartbeat
-- Register or refresh the worker (it counts as dead %(ttl)s seconds after this, database
-- clock, unless it heartbeats again); answers which of the jobs it runs were cancelled or
-- taken away meanwhile, so a missed notification cannot leave a job running.
WITH beat AS (
    INSERT INTO {workers} (worker_id, hostname, pid, queues, tags, expires_at)
    VALUES (%(worker)s, %(hostname)s, %(pid)s, %(queues)s, %(tags)s,
            now() + make_interval(secs => %(ttl)s))
    ON CONFLICT (worker_id) DO UPDATE
    SET last_seen = now(), expires_at = EXCLUDED.expires_at, queues = EXCLUDED.queues
    RETURNING worker_id
)
SELECT j.id FROM {jobs} j
WHERE j.id = ANY(%(running)s)
  AND (j.state <> 'running' OR j.taken_by IS DISTINCT FROM (SELECT worker_id FROM beat));

-- name: deregister
DELETE FROM {workers} WHERE worker_id = %(worker)s;

-- name: mark_started
-- Prefetched jobs (claimed with started_at NULL) start now: from then on recovery counts
-- their attempt. Rows another statement holds (the write-back of a job that finished
-- meanwhile, which writes its start itself) are skipped, never waited for: waiting
-- deadlocked with a concurrent write-back that locked the same rows in another order. A
-- row already started (e.g. by a rate-limit gate) counts as marked: were it left out, the
-- worker would ask again and again for a mark it can never get.
WITH marked AS (
    SELECT id FROM {jobs}
    WHERE id = ANY(%(ids)s) AND state = 'running' AND taken_by = %(worker)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} j SET started_at = coalesce(j.started_at, now())
WHERE j.id = ANY(ARRAY(SELECT id FROM marked)) RETURNING j.id;

-- name: delay_retries
-- Jobs recovered from a lost worker to be retried wait out their backoff (the delays are
-- computed by chancy.job.backoff_delay, as for any retry), in the transaction that
-- recovered them.
UPDATE {jobs} j SET scheduled_at = now() + make_interval(secs => d.delay)
FROM unnest(%(ids)s::uuid[], %(delays)s::float8[]) AS d(id, delay)
WHERE j.id = d.id AND j.state = 'retrying';
