-- Statements for operators: the `chancy` CLI, the dashboard, the test helpers
-- (built and mapped by chancy/store/pg/admin.py).
--
-- Statements returning whole jobs list their columns in the order record_from_row reads
-- them (chancy/store/pg/jobs.py's RECORD_COLUMNS; a test checks they agree).
--
-- The job selection (chancy.store.admin.JobSelection) is written out in full in every
-- statement that filters by it (list_jobs, bulk_count, bulk_retry, bulk_cancel,
-- bulk_delete, and dashboard.sql's list_jobs): the block between the lines
-- "-- selection" and "-- end of selection"; a test checks the copies are identical. A
-- NULL parameter matches everything.
--
-- The three bulk actions (bulk_retry, bulk_cancel, bulk_delete) each take one batch of at
-- most "batch" selected jobs after id "after", locked (skipping rows someone else holds),
-- change it and tell whom it concerns; each returns (changed, scanned, last id of the
-- batch, notifications sent), and the builder runs it again from the last id until a
-- batch comes back short. Waiters on finished jobs get their ids
-- "ids_per_notification" to a notification, as a worker sends them.


-- name: live_counts
-- Jobs not yet finished per queue and state, with the age of the oldest due waiting job
-- (what a live view polls). One branch per partial index, with its exact predicate (a
-- single IN () is planned as a full scan). The first three branches of `counts`.
SELECT queue, state, count(*),
       extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))::float8
FROM {jobs} WHERE state = 'pending' GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*),
       extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))::float8
FROM {jobs} WHERE state IN ('scheduled', 'retrying') GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*), NULL FROM {jobs} WHERE state = 'running' GROUP BY queue, state


-- name: counts
-- `live_counts`, and the jobs finished within the last "window" seconds (NULL: ever)
-- through the index on completed_at: millions of old rows cost nothing.
SELECT queue, state, count(*),
       extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))::float8
FROM {jobs} WHERE state = 'pending' GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*),
       extract(epoch FROM now() - min(scheduled_at) FILTER (WHERE scheduled_at <= now()))::float8
FROM {jobs} WHERE state IN ('scheduled', 'retrying') GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*), NULL FROM {jobs} WHERE state = 'running' GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*), NULL FROM {jobs}
WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND (%(window)s::float8 IS NULL OR completed_at >= now() - make_interval(secs => %(window)s::float8))
GROUP BY queue, state


-- name: workers
-- Every registered worker, its heartbeat age and liveness on the database clock, and the
-- ids of the jobs it runs (oldest start first).
SELECT w.worker_id, w.hostname, w.pid, w.queues, w.tags, w.started_at,
       extract(epoch FROM now() - w.last_seen)::float8, w.expires_at > now(),
       coalesce((SELECT array_agg(j.id::text ORDER BY j.started_at) FROM {jobs} j
                 WHERE j.state = 'running' AND j.taken_by = w.worker_id), '{{}}'),
       extract(epoch FROM now() - w.started_at)::float8
FROM {workers} w
ORDER BY w.hostname, w.pid, w.worker_id


-- name: table_health
-- One row whatever happens: the jobs table's statistics (zeros before its first count;
-- "jobs" is its full name), and the oldest transaction of any visible session that
-- holds a snapshot or a transaction id (backend_xmin, backend_xid), which is what stops
-- vacuum from removing dead rows. Other roles' sessions show only with pg_read_all_stats.
SELECT coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8,
       (SELECT extract(epoch FROM now() - min(a.xact_start))::float8 FROM pg_stat_activity a
        WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.xact_start IS NOT NULL
          AND a.pid <> pg_backend_pid())
FROM (VALUES (1)) AS one LEFT JOIN pg_stat_user_tables s ON s.relid = to_regclass(%(jobs)s)


-- name: row_estimate
-- The planner's estimate of a table's rows ("table": its full name); -1 before its
-- first ANALYZE, no row if there is no such table.
SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%(table)s)


-- name: list_jobs
-- The newest selected jobs, "limit" at most.
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key,
       limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency
FROM {jobs}
WHERE
  -- selection
  (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(task)s::text IS NULL OR func = %(task)s::text)
  AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
  AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  -- end of selection
ORDER BY id DESC
LIMIT %(limit)s


-- name: running
-- What `chancy inspect` shows: running jobs (of these queues, held by these workers)
-- through the index on taken_by, by worker then start.
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key,
       limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency
FROM {jobs}
WHERE state = 'running'
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(workers)s::text[] IS NULL OR taken_by = ANY(%(workers)s::text[]))
ORDER BY taken_by, started_at, id


-- name: scheduled
-- Jobs due later (countdown, eta, retry backoff) through the index on scheduled_at,
-- soonest first.
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key,
       limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency
FROM {jobs}
WHERE state IN ('scheduled', 'retrying') AND scheduled_at > now()
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
ORDER BY scheduled_at, id
LIMIT %(limit)s


-- name: states_of
-- How far a batch of jobs has got: jobs per state among these ids.
SELECT state, count(*) FROM {jobs} WHERE id = ANY(%(ids)s::uuid[]) GROUP BY state


-- name: batch_summary
-- Per queue, task and state of these jobs: how many, how many needed more than one
-- attempt, and the mean duration of the last attempt in milliseconds.
SELECT queue, func, state, count(*), count(*) FILTER (WHERE attempts > 1),
       (avg(extract(epoch FROM completed_at - started_at)) * 1000)::float8
FROM {jobs} WHERE id = ANY(%(ids)s::uuid[])
GROUP BY queue, func, state ORDER BY queue, func, state


-- name: peek_counts
-- For people to paste into psql after the demo: jobs and mean attempts per queue and state.
SELECT queue, state, count(*), avg(attempts) FROM {jobs} GROUP BY 1, 2 ORDER BY 1, 2


-- name: peek_failed
-- For people to paste into psql after the demo: a few failed jobs with their last error.
SELECT id, func, attempts, errors->-1->>'message' FROM {jobs} WHERE state = 'failed' LIMIT 5


-- name: purge
-- Delete waiting jobs (never running ones: the builder refuses them) of these states and
-- queues; deleted jobs per queue.
WITH purged AS (
    DELETE FROM {jobs}
    WHERE state = ANY(%(states)s::text[])
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    RETURNING queue
)
SELECT queue, count(*) FROM purged GROUP BY queue ORDER BY queue


-- name: bulk_count
-- How many jobs a bulk action would change now (a dry run).
SELECT count(*) FROM {jobs}
WHERE
  -- selection
  (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND (%(task)s::text IS NULL OR func = %(task)s::text)
  AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
  AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  -- end of selection


-- name: bulk_retry
-- Failed, cancelled or expired jobs run again (with one more attempt if they used all
-- theirs); the workers of their queues are told.
WITH batch AS (
    SELECT id FROM {jobs}
    WHERE
      -- selection
      (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND (%(task)s::text IS NULL OR func = %(task)s::text)
      AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
      AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
      AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      -- end of selection
      AND id > %(after)s::uuid
    ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE {jobs} j SET state = 'pending', scheduled_at = now(), completed_at = NULL, taken_by = NULL,
                        max_attempts = GREATEST(j.max_attempts, j.attempts + 1)
    FROM batch WHERE j.id = batch.id
    RETURNING j.id, j.queue
), told AS (
    SELECT pg_notify(%(pushed_channel)s, queue) FROM (SELECT DISTINCT queue FROM changed) q
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM batch),
       (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM told)


-- name: bulk_cancel
-- Jobs not yet finished cancelled; the workers running them are told to stop them, and
-- waiters that they finished.
WITH batch AS (
    SELECT id FROM {jobs}
    WHERE
      -- selection
      (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND (%(task)s::text IS NULL OR func = %(task)s::text)
      AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
      AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
      AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      -- end of selection
      AND id > %(after)s::uuid
    ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE {jobs} j SET state = 'cancelled', completed_at = now()
    FROM batch WHERE j.id = batch.id
    RETURNING j.id, j.queue
), told AS (
    SELECT pg_notify(%(cancel_channel)s, id::text) FROM changed
    UNION ALL
    SELECT pg_notify(%(done_channel)s, string_agg(id::text, ','))
    FROM (SELECT id, (row_number() OVER () - 1) / %(ids_per_notification)s AS part FROM changed) finished
    GROUP BY part
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM batch),
       (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM told)


-- name: bulk_delete
-- Jobs deleted (never running ones: the builder leaves that state out); waiters are told
-- they finished.
WITH batch AS (
    SELECT id FROM {jobs}
    WHERE
      -- selection
      (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND (%(task)s::text IS NULL OR func = %(task)s::text)
      AND (%(task_like)s::text IS NULL OR func ILIKE %(task_like)s::text)
      AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
      AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
      AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
      AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
      -- end of selection
      AND id > %(after)s::uuid
    ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), changed AS (
    DELETE FROM {jobs} j USING batch WHERE j.id = batch.id
    RETURNING j.id, j.queue
), told AS (
    SELECT pg_notify(%(done_channel)s, string_agg(id::text, ','))
    FROM (SELECT id, (row_number() OVER () - 1) / %(ids_per_notification)s AS part FROM changed) finished
    GROUP BY part
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM batch),
       (SELECT id FROM batch ORDER BY id DESC LIMIT 1), (SELECT count(*) FROM told)


-- name: statement_timeout
-- A CLI command's limit per statement on its session ("timeout": e.g. '3000ms').
SELECT set_config('statement_timeout', %(timeout)s, false)


-- name: in_flight
-- A worker's running jobs per queue and task (`chancy worker --metrics-port`), through
-- the index of running jobs by taken_by; jobs it prefetched and has not started are not
-- in flight.
SELECT queue, func, count(*) FROM {jobs}
WHERE state = 'running' AND taken_by = %(worker)s AND started_at IS NOT NULL
GROUP BY queue, func
