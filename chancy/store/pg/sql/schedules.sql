-- Cron schedules (the cron table). Every statement is scoped to one namespace (an app's
-- schedules): apps sharing a database never fire, change or delete each other's.

-- name: upsert
-- Store a schedule. An unchanged timing (cron, every, timezone) keeps its next firing:
-- redeploying neither repeats nor skips a tick.
INSERT INTO {cron} (namespace, name, job, cron, every, timezone, expires_in, next_fire_at, enabled)
VALUES (%(namespace)s, %(name)s, %(job)s::jsonb, %(cron)s, %(every)s, %(timezone)s, %(expires_in)s,
        %(next_fire_at)s, %(enabled)s)
ON CONFLICT (namespace, name) DO UPDATE SET
    job = EXCLUDED.job, expires_in = EXCLUDED.expires_in, enabled = EXCLUDED.enabled,
    updated_at = now(),
    next_fire_at = CASE
        WHEN ({cron}.cron, {cron}.every, {cron}.timezone)
             IS NOT DISTINCT FROM (EXCLUDED.cron, EXCLUDED.every, EXCLUDED.timezone)
        THEN {cron}.next_fire_at ELSE EXCLUDED.next_fire_at END,
    cron = EXCLUDED.cron, every = EXCLUDED.every, timezone = EXCLUDED.timezone;

-- name: adopt
-- Rows stored before namespaces by a Celery app's beat (migration 5) belong to no
-- namespace: the app that names one takes it over, timing and next tick included; a
-- leftover twin of a row the app already has is dropped.
WITH adopted AS (
    UPDATE {cron} c SET namespace = %(namespace)s, updated_at = now()
    WHERE c.namespace IS NULL AND c.name = ANY(%(names)s::text[])
      AND NOT EXISTS (SELECT 1 FROM {cron} o WHERE o.namespace = %(namespace)s AND o.name = c.name)
    RETURNING c.name
)
DELETE FROM {cron} c
WHERE c.namespace IS NULL AND c.name = ANY(%(names)s::text[])
  AND c.name NOT IN (SELECT name FROM adopted);

-- name: due
-- The namespace's due schedules, oldest tick first, locked for the firing transaction
-- (a second firer skips them). Columns as in list.
SELECT namespace, name, job::text, cron, every, timezone, expires_in, next_fire_at, last_fired_at, enabled, now()
FROM {cron}
WHERE enabled AND namespace = %(namespace)s AND next_fire_at <= now()
ORDER BY next_fire_at
LIMIT %(batch)s
FOR UPDATE SKIP LOCKED;

-- name: advance
-- Move a schedule on to its next tick, only if no one else did since it was read
-- (next_fire_at still the expected one).
UPDATE {cron} SET next_fire_at = %(next)s, last_fired_at = coalesce(%(fired)s, last_fired_at),
                  updated_at = now()
WHERE namespace = %(namespace)s AND name = %(name)s AND next_fire_at = %(expected)s;

-- name: wait
-- Seconds until the namespace's next schedule is due (NULL: none is enabled).
SELECT extract(epoch FROM min(next_fire_at) - now())::float8 FROM {cron}
WHERE enabled AND namespace = %(namespace)s;

-- name: list
-- The namespace's schedules by name, with the database clock when read.
SELECT namespace, name, job::text, cron, every, timezone, expires_in, next_fire_at, last_fired_at, enabled, now()
FROM {cron}
WHERE namespace = %(namespace)s
ORDER BY name;

-- name: delete
DELETE FROM {cron} WHERE namespace = %(namespace)s AND name = %(name)s;

-- name: delete_others
-- Delete the namespace's schedules named prefix... except those kept.
DELETE FROM {cron}
WHERE namespace = %(namespace)s AND starts_with(name, %(prefix)s) AND NOT name = ANY(%(keep)s::text[]);

-- name: try_lead
-- Take the namespace's firing lock on this session if free (true: taken, or held
-- already). A session-level advisory lock: it ends with the firing connection.
SELECT pg_try_advisory_lock(%(key)s);

-- name: now
SELECT now();
