-- Advancing a chancy.compat canvas (chain, group, chord, link, link_error) in the
-- transaction that completes a step (see chancy/compat/continuations.py for the shape of
-- meta.canvas). A PARKED job waits for its predecessors: state 'scheduled', a far-future
-- scheduled_at (chancy.store.pg.celery_canvas.PARKED_AT: never claimed until released)
-- and a counter meta.canvas.remaining.

-- name: park_replaced
-- Park a running job whose task replaced itself: it waits, with its new meta.canvas, for
-- its replacement; guarded by the attempt that replaced it (a late writer changes nothing).
UPDATE {jobs} SET state = 'scheduled', scheduled_at = %(parked_at)s, meta = %(meta)s::jsonb
WHERE id = %(id)s AND state = 'running' AND taken_by = %(worker)s AND attempts = %(attempt)s
RETURNING id;

-- name: countdown
-- A predecessor finished: each waiting job's counter drops by one (the row lock
-- serialises concurrent completions, so a chord body is released exactly once); answers
-- each job's counter after it.
UPDATE {jobs} SET meta = jsonb_set(meta, '{{canvas,remaining}}', to_jsonb((meta->'canvas'->>'remaining')::int - 1))
WHERE id = ANY(%(ids)s) AND state = 'scheduled' AND meta->'canvas' ? 'remaining'
  AND (meta->'canvas'->>'remaining')::int > 0
RETURNING id, (meta->'canvas'->>'remaining')::int;

-- name: release
-- Jobs whose counter reached zero become pending (or scheduled after their delay), with
-- the predecessor's result (a chord body: the list of its header's results, in order) in
-- front of their arguments when they take it. A statement of its own, after the
-- countdown, so that its snapshot sees the results of every predecessor (committed
-- before their own countdown let ours through).
WITH released AS (
    UPDATE {jobs} j SET
        state = CASE WHEN (j.meta->'canvas'->>'delay')::float8 > 0 THEN 'scheduled' ELSE 'pending' END,
        scheduled_at = now() + make_interval(secs => coalesce((j.meta->'canvas'->>'delay')::float8, 0)),
        args = CASE WHEN (j.meta->'canvas'->>'pass_result')::boolean THEN
            jsonb_build_array(CASE WHEN (j.meta->'canvas'->>'join')::boolean THEN
                (SELECT coalesce(jsonb_agg(p.result ORDER BY a.ord), '[]'::jsonb)
                 FROM jsonb_array_elements_text(j.meta->'canvas'->'after') WITH ORDINALITY AS a(id, ord)
                 JOIN {jobs} p ON p.id = a.id::uuid)
            ELSE (SELECT p.result FROM {jobs} p
                  WHERE p.id = (j.meta->'canvas'->'after'->>0)::uuid) END) || j.args
        ELSE j.args END
    WHERE j.id = ANY(%(ids)s) AND j.state = 'scheduled'
    RETURNING j.queue
)
SELECT pg_notify(%(channel)s, queue) FROM released;

-- name: release_errbacks
-- A step failed: its parked errbacks run, with the failed task's id as first argument.
WITH released AS (
    UPDATE {jobs} SET state = 'pending', scheduled_at = now(),
        args = jsonb_build_array(%(task_id)s::text) || args
    WHERE id = ANY(%(ids)s) AND state = 'scheduled' AND meta->'canvas' ? 'remaining'
    RETURNING queue
)
SELECT pg_notify(%(channel)s, queue) FROM released;

-- name: finish
-- Parked jobs that will never run finish in %(state)s: failed with the step's error (the
-- rest of a chain), or cancelled (unused errbacks, a revoked step's dependants).
WITH finished AS (
    UPDATE {jobs} SET state = %(state)s, completed_at = now(),
        errors = CASE WHEN %(error)s::jsonb IS NULL THEN errors
                      ELSE errors || jsonb_build_array(%(error)s::jsonb) END
    WHERE id = ANY(%(ids)s) AND state = 'scheduled' AND meta->'canvas' ? 'remaining'
    RETURNING id
)
SELECT pg_notify(%(channel)s, id::text) FROM finished;
