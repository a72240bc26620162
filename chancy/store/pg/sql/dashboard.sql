-- The dashboard's own statements (built and mapped by chancy/store/pg/dashboard.py);
-- what it shares with the CLI (counts, workers, table health, bulk actions) is in
-- admin.sql. Rows come back as JSON-ready dicts: jsonb columns are read as text and
-- parsed with the plain json module, so a stored value is shown exactly as stored.


-- name: now
-- The database clock (every age the dashboard shows is measured on it).
SELECT now()


-- name: finished_buckets
-- Jobs finished since "start" per bucket ("bucket" seconds wide; its start in epoch
-- seconds), queue and state, through the partial index on completed_at.
SELECT (floor(extract(epoch FROM completed_at) / %(bucket)s) * %(bucket)s)::float8, queue, state, count(*)
FROM {jobs}
WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired') AND completed_at >= %(start)s
GROUP BY 1, 2, 3


-- name: list_jobs
-- A page of the job list: the selected jobs (see admin.sql's header) newest first,
-- "limit" at most, after (or, "newer", before) the cursor ("cursor_at", "cursor_id";
-- NULL: the first page), each with a preview of its arguments.
SELECT id, queue, func, state, attempts, max_attempts, priority, created_at,
       started_at, completed_at, left(args::text || ' ' || kwargs::text, 160)
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
  AND (%(cursor_at)s::timestamptz IS NULL OR
       CASE WHEN %(newer)s THEN (created_at, id) > (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid)
            ELSE (created_at, id) < (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid) END)
ORDER BY CASE WHEN %(newer)s THEN created_at END ASC, CASE WHEN %(newer)s THEN id END ASC,
         created_at DESC, id DESC
LIMIT %(limit)s


-- name: job
-- One job with every column (jsonb as text), and the database clock.
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by,
       unique_key, limits::text, backoff::text, meta::text, result::text, errors::text, now()
FROM {jobs} WHERE id = %(id)s


-- name: delete
-- Delete a job unless it is running; (the state it had, deleted?), no row if absent.
-- Waiters on it are told it finished.
WITH target AS (
    SELECT id, state FROM {jobs} WHERE id = %(id)s FOR UPDATE
), gone AS (
    DELETE FROM {jobs} j USING target t WHERE j.id = t.id AND t.state <> 'running'
    RETURNING j.id
)
SELECT t.state, EXISTS (SELECT 1 FROM gone),
       CASE WHEN EXISTS (SELECT 1 FROM gone) THEN pg_notify(%(done_channel)s, t.id::text) END
FROM target t


-- name: canvas
-- Every job linked to "id" through canvas links (meta.canvas: after, then, errbacks,
-- downstream, dropped), in either direction, "limit" at most. Links are followed only
-- where they are arrays of job ids ("uuid_pattern"): meta is whatever the pusher wrote,
-- and a cast of anything else to uuid would fail the whole page.
WITH RECURSIVE linked(id) AS (
    SELECT id FROM {jobs} WHERE id = %(id)s
    UNION
    SELECT j.id FROM linked l
    JOIN {jobs} src ON src.id = l.id
    CROSS JOIN LATERAL jsonb_array_elements_text(
        CASE jsonb_typeof(src.meta->'canvas'->'after') WHEN 'array' THEN src.meta->'canvas'->'after' ELSE '[]'::jsonb END
        || CASE jsonb_typeof(src.meta->'canvas'->'then') WHEN 'array' THEN src.meta->'canvas'->'then' ELSE '[]'::jsonb END
        || CASE jsonb_typeof(src.meta->'canvas'->'errbacks') WHEN 'array' THEN src.meta->'canvas'->'errbacks' ELSE '[]'::jsonb END
        || CASE jsonb_typeof(src.meta->'canvas'->'downstream') WHEN 'array' THEN src.meta->'canvas'->'downstream' ELSE '[]'::jsonb END
        || CASE jsonb_typeof(src.meta->'canvas'->'dropped') WHEN 'array' THEN src.meta->'canvas'->'dropped' ELSE '[]'::jsonb END
    ) AS n(id)
    JOIN {jobs} j ON j.id = CASE WHEN n.id ~* %(uuid_pattern)s THEN n.id::uuid END
)
SELECT j.id, j.queue, j.func, j.state, j.attempts, j.max_attempts, j.created_at,
       j.started_at, j.completed_at, (j.meta->'canvas')::text, (j.meta->'celery'->>'group')
FROM {jobs} j WHERE j.id IN (SELECT id FROM linked LIMIT %(limit)s)


-- name: metric_window_end
-- Where a metrics scrape's window ends: "lag" seconds ago on the database clock (a
-- write-back's completed_at is its transaction's start, so older ones are committed).
SELECT now() - make_interval(secs => %(lag)s)


-- name: metric_totals
-- Per queue and state, jobs finished in ["start", "end"): count, run and wait seconds
-- summed, and how many of them were timed.
SELECT queue, state, count(*),
       coalesce(sum(extract(epoch FROM completed_at - started_at))
                FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL), 0)::float8,
       coalesce(sum(extract(epoch FROM started_at - scheduled_at))
                FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL), 0)::float8,
       count(*) FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL)
FROM {jobs}
WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND completed_at >= %(start)s AND completed_at < %(end)s
GROUP BY queue, state


-- name: metric_buckets
-- Per queue and bucket bound ("bounds"): how many jobs finished in ["start", "end") ran,
-- and waited, at most that long (cumulative counts).
WITH timed AS (
    SELECT queue, extract(epoch FROM completed_at - started_at) AS run,
           extract(epoch FROM started_at - scheduled_at) AS wait
    FROM {jobs}
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
      AND completed_at >= %(start)s AND completed_at < %(end)s
      AND state IN ('succeeded', 'failed') AND started_at IS NOT NULL
)
SELECT t.queue, b.le, count(*) FILTER (WHERE t.run <= b.le), count(*) FILTER (WHERE t.wait <= b.le)
FROM timed t CROSS JOIN unnest(%(bounds)s::float8[]) AS b(le)
GROUP BY t.queue, b.le


-- name: workers_alive
-- Workers whose heartbeat has not expired.
SELECT count(*) FROM {workers} WHERE expires_at > now()
