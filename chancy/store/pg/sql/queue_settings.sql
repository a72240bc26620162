-- Runtime queue settings (the queues table): a queue without a row runs on its code's
-- settings. Every change notifies {queues_channel} with the queue's name, so workers
-- re-read the table at once.

-- name: upsert
-- Create the queue's row or change the settings flagged set_*: the others keep their
-- value. A pause ends at paused_until, pause_for seconds from now (database
-- clock), or never ('infinity', with pause_forever); a NULL end resumes.
WITH changed AS (
    INSERT INTO {queues} AS q (name, concurrency, paused_until, rate_limit, rate_period)
    VALUES (%(name)s, %(concurrency)s,
            CASE WHEN %(pause_forever)s THEN 'infinity'::timestamptz
                 ELSE coalesce(%(paused_until)s::timestamptz,
                               now() + make_interval(secs => %(pause_for)s::float8)) END,
            %(rate_limit)s, %(rate_period)s)
    ON CONFLICT (name) DO UPDATE SET
        concurrency = CASE WHEN %(set_concurrency)s THEN EXCLUDED.concurrency ELSE q.concurrency END,
        paused_until = CASE WHEN %(set_pause)s THEN EXCLUDED.paused_until ELSE q.paused_until END,
        rate_limit = CASE WHEN %(set_rate)s THEN EXCLUDED.rate_limit ELSE q.rate_limit END,
        rate_period = CASE WHEN %(set_rate)s THEN EXCLUDED.rate_period ELSE q.rate_period END,
        updated_at = now()
    RETURNING name
)
SELECT pg_notify({queues_channel}, %(name)s) FROM changed;

-- name: delete
-- Remove the queue's settings and, with purge, its waiting jobs: answers whether it
-- had settings and how many jobs were deleted.
WITH gone AS (DELETE FROM {queues} WHERE name = %(name)s RETURNING name),
purged AS (
    DELETE FROM {jobs} WHERE %(purge)s AND queue = %(name)s
      AND state IN ('pending', 'scheduled', 'retrying')
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM purged), pg_notify({queues_channel}, %(name)s);

-- name: list
-- The settings of the queues named names (NULL: every queue with a row), by name; a
-- pause already over reads as none.
SELECT name, concurrency,
       -- An open-ended pause is 'infinity', which Python cannot load: it
       -- reads as the last day datetime can hold in any time zone.
       CASE WHEN paused_until > now()
            THEN LEAST(paused_until, timestamptz '9999-12-31 00:00:00+00') END,
       rate_limit, rate_period, updated_at
FROM {queues}
WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])
ORDER BY name;
