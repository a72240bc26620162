-- Celery task states, results and relations kept on job rows: what the result backend
-- (chancy.compat.backend, in stock Celery processes) and chancy.compat's AsyncResult,
-- update_state and stamping read and write. %(parked_at)s is the far-future scheduled_at
-- of a row no worker may claim (chancy.store.pg.celery_canvas.PARKED_AT).

-- name: store_state
-- A Celery state written onto the row. Terminal states (%(state)s: the row state they
-- become) finish the row; others (%(state)s NULL) only record the Celery state and its
-- info in meta.celery. A task that never went through the transport (another broker)
-- gets a row here: finished, or for a non-terminal state one parked, so no worker claims
-- it; celery.foreign marks such a row: the task runs wherever its broker sent it.
-- celery.write names one store: sent again after a dropped connection, a store that had
-- committed changes nothing and returns no row (so its canvas step and notification are
-- not repeated). Answers the row's meta.canvas, for the canvas step it finishes.
-- Without %(with_canvas)s (a store sent on its own, with no transaction around it: one
-- round trip), a row that holds canvas bookkeeping is left as it is and answered with
-- canvas_pending, so the caller stores it again in a transaction with its canvas step.
WITH stored AS (
    INSERT INTO {jobs} AS j (id, queue, func, args, kwargs, state, attempts, meta,
                             result, errors, completed_at, started_at, scheduled_at)
    VALUES (%(id)s, %(queue)s, %(func)s, %(args)s, %(kwargs)s,
            COALESCE(%(state)s::text, 'scheduled'), 1,
            jsonb_build_object('celery', %(celery)s::jsonb || jsonb_build_object('foreign', true)),
            %(result)s,
            CASE WHEN %(error)s::jsonb IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(%(error)s::jsonb) END,
            CASE WHEN %(state)s::text IS NOT NULL THEN now() END, now(),
            CASE WHEN %(state)s::text IS NULL THEN %(parked_at)s ELSE now() END)
    ON CONFLICT (id) DO UPDATE SET
        state = COALESCE(%(state)s::text, j.state),
        result = CASE WHEN %(state)s::text IS NULL THEN j.result ELSE %(result)s END,
        errors = CASE WHEN %(error)s::jsonb IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(%(error)s::jsonb) END,
        completed_at = CASE WHEN %(state)s::text IS NULL THEN j.completed_at ELSE now() END,
        taken_by = CASE WHEN %(state)s::text IS NULL THEN j.taken_by END,
        meta = j.meta || jsonb_build_object('celery',
            COALESCE(j.meta->'celery', '{{}}') || %(celery)s::jsonb)
    WHERE j.meta->'celery'->>'write' IS DISTINCT FROM %(celery)s::jsonb->>'write'
      AND (%(with_canvas)s OR j.meta->'canvas' IS NULL)
    RETURNING id, state, meta->'canvas' AS canvas
)
SELECT id, CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'expired')
                THEN pg_notify(%(done)s, id::text) END, canvas::text, FALSE AS canvas_pending
FROM stored
UNION ALL
SELECT id, NULL, NULL, TRUE FROM {jobs}
WHERE id = %(id)s AND NOT %(with_canvas)s AND meta->'canvas' IS NOT NULL
  AND meta->'celery'->>'write' IS DISTINCT FROM %(celery)s::jsonb->>'write';

-- name: finish_ignored
-- Finish the row of a task whose result Celery ignores (ignore_result): the worker
-- stores nothing, yet the row must not stay running (a worker restart would run the task
-- again), and readers must not take it for a stored result: it is marked
-- result_ignored, which the backend reads as PENDING, no result. A running row (the
-- Celery consumer acknowledged it and left it for the backend), or one the
-- acknowledgement itself finished as succeeded before the task ran (the message said
-- ignore_result): a failure (%(error)s) corrects it to failed.
WITH finished AS (
    UPDATE {jobs} SET
        state = CASE WHEN %(error)s::jsonb IS NULL THEN 'succeeded' ELSE 'failed' END,
        completed_at = now(), taken_by = NULL,
        errors = CASE WHEN %(error)s::jsonb IS NULL THEN errors
                      ELSE errors || jsonb_build_array(%(error)s::jsonb) END,
        meta = meta || jsonb_build_object('celery', COALESCE(meta->'celery', '{{}}')
            || jsonb_build_object('result_ignored', true))
    WHERE id = %(id)s AND (state = 'running'
        OR (state = 'succeeded' AND result IS NULL AND meta->'celery'->>'finished_by_ack' = 'true'))
    RETURNING id
)
SELECT pg_notify(%(done)s, id::text) FROM finished;

-- name: forget
-- Forget a finished task's result: its row goes (a live one stays).
DELETE FROM {jobs} WHERE id = %(id)s AND state IN ('succeeded', 'failed', 'cancelled', 'expired');

-- name: set_state
-- A custom state a task records while it runs (update_state, e.g. PROGRESS) and its
-- info. Only a live job takes it; a finished one keeps its final state.
UPDATE {jobs} SET meta = meta || jsonb_build_object('celery',
    coalesce(meta->'celery', '{{}}') || jsonb_build_object('state', %(state)s::text, 'info', %(info)s::jsonb))
WHERE id = %(id)s AND state IN ('pending', 'scheduled', 'running', 'retrying');

-- name: children
-- The rows of the tasks a task sent while it ran.
SELECT id FROM {jobs} WHERE meta->'celery'->>'parent_id' = %(id)s ORDER BY id;

-- name: group_members
-- A group's members, in group order, as (row id, Celery task id if it is not the row id).
SELECT id, meta->'celery'->>'task_id' FROM {jobs} WHERE meta->'celery'->>'group' = %(group)s
ORDER BY (meta->'celery'->>'group_index')::int, id;

-- name: stamped
-- Task ids of the rows in one of %(states)s stamped with one of %(values)s (text, JSON
-- for other values) of the header %(key)s (Celery's stamping: meta.celery.stamps).
SELECT coalesce(meta->'celery'->>'task_id', id::text) FROM {jobs}
WHERE state = ANY(%(states)s) AND meta->'celery'->'stamps'->>%(key)s = ANY(%(values)s);
