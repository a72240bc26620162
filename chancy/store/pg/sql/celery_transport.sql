-- The kombu transport's statements on job rows: storing a published Celery message as a
-- row, and acknowledging, requeueing or failing one delivery of it.
--
-- A delivery is one claim of a row: (id, attempts) under the consumer's id, so every
-- statement on a delivery matches `id = %(id)s AND attempts = %(attempt)s AND state =
-- 'running' AND taken_by = %(consumer)s` and sending it again changes nothing.
-- `scheduled_at` %(parked_at)s is the far-future time of a row no worker may claim
-- (chancy.store.pg.celery_canvas.PARKED_AT).

-- name: store_new
-- A message under a new id without replacement marks (nearly every publish): the row,
-- nothing else to look at. Short enough for psycopg's parse cache, which `store` is not.
-- Its INSERT is `store`'s, word for word, and names a push's columns (chancy.store.pg.jobs
-- PUSHED, in that order, with the same values) and then the transport's own: the state,
-- the deliveries so far, and for a message that says it is invalid (%(error)s) its error
-- (stored failed). tests/compat/test_celery_statements.py checks both.
WITH stored AS (
    INSERT INTO {jobs} AS j (id, queue, func, args, kwargs, priority, max_attempts, scheduled_at,
        expires_at, unique_key, limits, backoff, meta, concurrency_key, concurrency,
        state, attempts, errors, completed_at)
    VALUES (%(id)s, %(queue)s, %(func)s, %(args)s, %(kwargs)s, %(priority)s, %(max_attempts)s,
        COALESCE(%(scheduled_at)s, now()), %(expires_at)s, %(unique_key)s, %(limits)s, %(backoff)s, %(meta)s,
        %(concurrency_key)s, %(concurrency)s,
        CASE WHEN %(error)s::jsonb IS NOT NULL THEN 'failed'
             WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled'
             ELSE 'pending' END,
        %(attempts)s,
        CASE WHEN %(error)s::jsonb IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(%(error)s::jsonb) END,
        CASE WHEN %(error)s::jsonb IS NOT NULL THEN now() END)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, queue, state
)
SELECT s.state, NULL::text, FALSE, FALSE,
       CASE WHEN s.state = 'pending' THEN pg_notify(%(pushed)s, s.queue) END,
       CASE WHEN s.state = 'failed' THEN pg_notify(%(done)s, s.id::text) END
FROM stored s;

-- name: store
-- A message whose id is taken, or that replaces a task (Task.replace()): the rules of an
-- id's reuse (see chancy/store/pg/celery_transport.py). Runs only on those rare paths
-- (5.7 KB: parsed at each run).
--
-- The row j takes the message over only while a Celery consumer runs it (or after an ack
-- finished it without a result, when results do not come through this backend), and only
-- for the task's own RETRY:
--     (j.func = EXCLUDED.func AND EXCLUDED.attempts > 0
--      AND j.attempts = EXCLUDED.attempts + <retries_base of j>)
-- (same task, `retries` equal to the deliveries since the row was last replaced), or its
-- REPLACEMENT: the message carries Celery's replace marks, deeper than the row's
-- (%(nesting)s > its replaced_task_nesting, same root), and comes from the task itself
-- (%(parent_id)s is the row's task id) or from the task before it, whose own message names
-- %(task_id)s as a later step: in its chain, as its chord's body, or as the first step of
-- that body (a chord chained on). A replaced task AWAITING a replacement published later
-- (a chain's last task, a chord's body) is parked, no longer running under its consumer:
-- the first message of the replacement, sent by the task itself, parks it (`parked`), so
-- a consumer stopping meanwhile does not get it run again.
--
-- A takeover keeps counting the row's deliveries (so a delivery tag of the replaced run
-- never names one of the replacement's) and notes how many came before it in
-- meta.celery.retries_base (the NEW BASE: for a retry the row's base, for a replacement
-- the row's attempts), so the replacement's `retries` start again at 0. `existing` reads
-- the row as it was before this statement, to tell a repeated message (same digest) from
-- a refused one, and a replacement of a task revoked while it waited (`discarded`).
WITH stored AS (
    INSERT INTO {jobs} AS j (id, queue, func, args, kwargs, priority, max_attempts, scheduled_at,
        expires_at, unique_key, limits, backoff, meta, concurrency_key, concurrency,
        state, attempts, errors, completed_at)
    VALUES (%(id)s, %(queue)s, %(func)s, %(args)s, %(kwargs)s, %(priority)s, %(max_attempts)s,
        COALESCE(%(scheduled_at)s, now()), %(expires_at)s, %(unique_key)s, %(limits)s, %(backoff)s, %(meta)s,
        %(concurrency_key)s, %(concurrency)s,
        CASE WHEN %(error)s::jsonb IS NOT NULL THEN 'failed'
             WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled'
             ELSE 'pending' END,
        %(attempts)s,
        CASE WHEN %(error)s::jsonb IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(%(error)s::jsonb) END,
        CASE WHEN %(error)s::jsonb IS NOT NULL THEN now() END)
    ON CONFLICT (id) DO UPDATE SET
        queue = EXCLUDED.queue, func = EXCLUDED.func, args = EXCLUDED.args,
        kwargs = EXCLUDED.kwargs, priority = EXCLUDED.priority, state = EXCLUDED.state,
        attempts = EXCLUDED.attempts
            + (CASE WHEN (j.func = EXCLUDED.func AND EXCLUDED.attempts > 0
                          AND j.attempts = EXCLUDED.attempts + COALESCE((j.meta->'celery'->>'retries_base')::int, 0))
                    THEN COALESCE((j.meta->'celery'->>'retries_base')::int, 0) ELSE j.attempts END),
        max_attempts = EXCLUDED.max_attempts
            + (CASE WHEN (j.func = EXCLUDED.func AND EXCLUDED.attempts > 0
                          AND j.attempts = EXCLUDED.attempts + COALESCE((j.meta->'celery'->>'retries_base')::int, 0))
                    THEN COALESCE((j.meta->'celery'->>'retries_base')::int, 0) ELSE j.attempts END),
        scheduled_at = EXCLUDED.scheduled_at, expires_at = EXCLUDED.expires_at,
        limits = EXCLUDED.limits,
        meta = jsonb_set(EXCLUDED.meta, '{{celery,retries_base}}', to_jsonb(
            (CASE WHEN (j.func = EXCLUDED.func AND EXCLUDED.attempts > 0
                        AND j.attempts = EXCLUDED.attempts + COALESCE((j.meta->'celery'->>'retries_base')::int, 0))
                  THEN COALESCE((j.meta->'celery'->>'retries_base')::int, 0) ELSE j.attempts END))),
        errors = j.errors || EXCLUDED.errors, result = NULL, taken_by = NULL,
        started_at = NULL, completed_at = EXCLUDED.completed_at
    WHERE (
            -- retry
            (j.func = EXCLUDED.func AND EXCLUDED.attempts > 0
             AND j.attempts = EXCLUDED.attempts + COALESCE((j.meta->'celery'->>'retries_base')::int, 0))
            -- or replacement
            OR (%(nesting)s > COALESCE((j.meta->'celery'->>'replaced_task_nesting')::int, 0)
                AND COALESCE(j.meta->'celery'->>'root_id', j.meta->'celery'->>'task_id', j.id::text) = %(root_id)s
                AND (%(parent_id)s = COALESCE(j.meta->'celery'->>'task_id', j.id::text)
                     OR EXISTS (SELECT 1 FROM {jobs} p WHERE p.id = %(parent_job)s
                                AND (p.meta->'celery'->'chain' @> jsonb_build_array(jsonb_build_object('options',
                                         jsonb_build_object('task_id', %(task_id)s::text)))
                                     OR p.meta->'celery'->'chord'->'options'->>'task_id' = %(task_id)s
                                     OR p.meta->'celery'->'chord'->'kwargs'->'tasks'->0->'options'->>'task_id' = %(task_id)s))))
        )
        AND ((j.state = 'running' AND j.taken_by LIKE 'celery:%%')
             OR (j.state = 'succeeded' AND j.result IS NULL
                 AND j.meta->'celery'->>'finished_by_ack' = 'true'))
       -- or the replacement of a task awaiting it
       OR ((%(nesting)s > COALESCE((j.meta->'celery'->>'replaced_task_nesting')::int, 0)
            AND COALESCE(j.meta->'celery'->>'root_id', j.meta->'celery'->>'task_id', j.id::text) = %(root_id)s
            AND (%(parent_id)s = COALESCE(j.meta->'celery'->>'task_id', j.id::text)
                 OR EXISTS (SELECT 1 FROM {jobs} p WHERE p.id = %(parent_job)s
                            AND (p.meta->'celery'->'chain' @> jsonb_build_array(jsonb_build_object('options',
                                     jsonb_build_object('task_id', %(task_id)s::text)))
                                 OR p.meta->'celery'->'chord'->'options'->>'task_id' = %(task_id)s
                                 OR p.meta->'celery'->'chord'->'kwargs'->'tasks'->0->'options'->>'task_id' = %(task_id)s))))
           AND (j.state = 'scheduled' AND j.meta->'celery'->>'awaiting_replacement' = 'true'))
    RETURNING id, queue, state, meta->'celery' AS celery
),
parked AS (
    UPDATE {jobs} r SET state = 'scheduled', scheduled_at = %(parked_at)s, taken_by = NULL,
        meta = r.meta || jsonb_build_object('celery', COALESCE(r.meta->'celery', '{{}}')
            || jsonb_build_object('awaiting_replacement', true))
    FROM stored s
    WHERE r.id = %(parent_job)s AND %(parent_id)s <> %(task_id)s
        AND r.state = 'running' AND r.taken_by LIKE 'celery:%%'
        AND %(nesting)s > COALESCE((r.meta->'celery'->>'replaced_task_nesting')::int, 0)
        AND COALESCE(r.meta->'celery'->>'root_id', r.meta->'celery'->>'task_id', r.id::text) = %(root_id)s
        AND (s.celery->'chain' @> jsonb_build_array(jsonb_build_object('options',
                 jsonb_build_object('task_id', %(parent_id)s::text)))
             OR s.celery->'chord'->'options'->>'task_id' = %(parent_id)s
             OR s.celery->'chord'->'kwargs'->'tasks'->0->'options'->>'task_id' = %(parent_id)s)
    RETURNING r.id
),
existing AS (
    SELECT state, meta->'celery'->>'digest' = %(digest)s AS repeated,
        (state = 'cancelled' AND meta->'celery'->>'awaiting_replacement' = 'true'
         AND (%(nesting)s > COALESCE((j.meta->'celery'->>'replaced_task_nesting')::int, 0)
              AND COALESCE(j.meta->'celery'->>'root_id', j.meta->'celery'->>'task_id', j.id::text) = %(root_id)s
              AND (%(parent_id)s = COALESCE(j.meta->'celery'->>'task_id', j.id::text)
                   OR EXISTS (SELECT 1 FROM {jobs} p WHERE p.id = %(parent_job)s
                              AND (p.meta->'celery'->'chain' @> jsonb_build_array(jsonb_build_object('options',
                                       jsonb_build_object('task_id', %(task_id)s::text)))
                                   OR p.meta->'celery'->'chord'->'options'->>'task_id' = %(task_id)s
                                   OR p.meta->'celery'->'chord'->'kwargs'->'tasks'->0->'options'->>'task_id' = %(task_id)s)))))
            AS discarded
    FROM {jobs} j WHERE id = %(id)s
)
SELECT s.state, e.state, COALESCE(e.repeated, FALSE), s.state IS NULL AND COALESCE(e.discarded, FALSE),
       CASE WHEN s.state = 'pending' THEN pg_notify(%(pushed)s, s.queue) END,
       CASE WHEN s.state = 'failed' THEN pg_notify(%(done)s, s.id::text) END
FROM (VALUES (1)) AS one LEFT JOIN stored s ON TRUE LEFT JOIN existing e ON TRUE
    LEFT JOIN (SELECT count(*) FROM parked) AS parked_count ON TRUE;

-- name: ack
-- Acknowledged deliveries, several at once (a consumer in Celery's event loop gathers the
-- acks of a moment and sends them with its next claim): %(ids)s, %(attempts)s and
-- %(finish)s side by side. An ack finishes the row, unless its result is still to come
-- through the Chancy result backend (finish false): then the row stays running under the
-- consumer, so a consumer dying mid-task gets it recovered, until the backend writes the
-- outcome — or the task is known to have ended without one (`unrecorded_attempt` is this
-- delivery's: see end_unrecorded). An ack that comes once the result backend has finished
-- the row (acks_late; in Celery's event loop a solo pool acks after the task ran) leaves
-- the outcome as it is and only names the consumer, as an earlier ack does (`noted`: in
-- the same statement, so no second round trip). `held` locks the rows first and reads them
-- as they are once locked: an ack that waited for a result store of the same row (a
-- prefork child storing its outcome meanwhile) sees it finished and notes it, where the
-- row as it was when the statement began (running) would match neither update. The two
-- updates take the rows `held` read running, resp. finished (all but expired), so they
-- exclude each other. Rows are found by id = ANY(...), read through the key.
WITH delivery AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(finish)s::boolean[]) AS d(id, attempt, finish)
), held AS (
    SELECT j.id, d.finish, j.state = 'running' AND j.taken_by = %(consumer)s AS running,
           j.state IN ('succeeded', 'failed', 'cancelled') AND j.meta->'celery'->>'acked_by' IS NULL AS finished
    FROM {jobs} j JOIN delivery d ON d.id = j.id AND d.attempt = j.attempts
    WHERE j.id = ANY(%(ids)s::uuid[])
    FOR UPDATE OF j
), acked AS (
    UPDATE {jobs} j SET
        state = CASE WHEN h.finish OR j.meta->'celery'->'unrecorded_attempt' = to_jsonb(j.attempts)
                     THEN 'succeeded' ELSE j.state END,
        completed_at = CASE WHEN h.finish OR j.meta->'celery'->'unrecorded_attempt' = to_jsonb(j.attempts)
                            THEN now() END,
        meta = j.meta || jsonb_build_object('celery', COALESCE(j.meta->'celery', '{{}}')
            || jsonb_build_object('acked_by', %(consumer)s::text, 'finished_by_ack', h.finish)
            || CASE WHEN j.meta->'celery'->'unrecorded_attempt' = to_jsonb(j.attempts)
                    THEN '{{"result_ignored": true}}'::jsonb ELSE '{{}}'::jsonb END)
    FROM held h
    WHERE j.id = ANY(%(ids)s::uuid[]) AND j.id = h.id AND h.running
    RETURNING j.id, j.state
), noted AS (
    UPDATE {jobs} j SET
        meta = j.meta || jsonb_build_object('celery', COALESCE(j.meta->'celery', '{{}}')
            || jsonb_build_object('acked_by', %(consumer)s::text))
    FROM held h
    WHERE j.id = ANY(%(ids)s::uuid[]) AND j.id = h.id AND h.finished
    RETURNING j.id
)
SELECT CASE WHEN state = 'succeeded' THEN pg_notify(%(done)s, id::text) END FROM acked;

-- name: end_unrecorded
-- The other half of `ack`: a task that raised Ignore or Reject stores no state (Celery's
-- trace only logs it), so the row is noted as ended without an outcome and, once its
-- delivery is acknowledged too (an early ack already was: acked_by is the holder; an
-- acks_late one follows), finished with no result, read as PENDING as on Redis. Never
-- before the task ended, so a consumer dying mid-task still gets its row recovered. Run
-- from wherever the task ran (a pool child does not know its consumer's id). A task that
-- stored a state meanwhile (Task.replace() stored its replacement) no longer matches.
WITH ended AS (
    UPDATE {jobs} SET
        state = CASE WHEN meta->'celery'->>'acked_by' = taken_by THEN 'succeeded' ELSE state END,
        completed_at = CASE WHEN meta->'celery'->>'acked_by' = taken_by THEN now() ELSE completed_at END,
        meta = meta || jsonb_build_object('celery', COALESCE(meta->'celery', '{{}}')
            || jsonb_build_object('unrecorded_attempt', attempts)
            || CASE WHEN meta->'celery'->>'acked_by' = taken_by
                    THEN '{{"result_ignored": true}}'::jsonb ELSE '{{}}'::jsonb END)
    WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'running' AND taken_by LIKE 'celery:%%'
    RETURNING id, state
)
SELECT CASE WHEN state = 'succeeded' THEN pg_notify(%(done)s, id::text) END FROM ended;

-- name: requeue
-- A requeued delivery (a reject with requeue, a channel closed with it unacknowledged) is
-- delivered next as `redelivered`, as kombu marks a message it restores. Its next
-- delivery has the same attempt number, so a note that its task ended
-- (Reject(requeue=True)) is dropped: that one will run again.
WITH requeued AS (
    UPDATE {jobs} SET state = 'pending', attempts = GREATEST(attempts - 1, 0),
        taken_by = NULL, started_at = NULL,
        meta = meta || jsonb_build_object('celery',
            (COALESCE(meta->'celery', '{{}}') - 'unrecorded_attempt') || jsonb_build_object('redelivered', true))
    WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'running' AND taken_by = %(consumer)s
    RETURNING queue
)
SELECT pg_notify(%(pushed)s, queue) FROM requeued;

-- name: release_undelivered
-- After a claim whose answer was lost (the connection dropped), rows it may have
-- committed are running under the consumer yet were never delivered: put back every row
-- it holds that is neither delivered (%(delivered)s) nor acknowledged by it.
WITH released AS (
    UPDATE {jobs} SET state = 'pending', attempts = GREATEST(attempts - 1, 0),
        taken_by = NULL, started_at = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM {jobs}
        WHERE state = 'running' AND taken_by = %(consumer)s AND id <> ALL(%(delivered)s::uuid[])
          AND meta->'celery'->>'acked_by' IS DISTINCT FROM %(consumer)s))
    RETURNING queue
)
SELECT pg_notify(%(pushed)s, queue) FROM released;

-- name: release
-- Rows a consumer claimed ahead (its prefetch) and never handed to Celery, put back when
-- it stops consuming their queue or closes: pending again, the claim's attempt given back.
WITH released AS (
    UPDATE {jobs} SET state = 'pending', attempts = GREATEST(attempts - 1, 0),
        taken_by = NULL, started_at = NULL
    WHERE id = ANY(%(ids)s::uuid[]) AND state = 'running' AND taken_by = %(consumer)s
    RETURNING queue
)
SELECT pg_notify(%(pushed)s, queue) FROM released;

-- name: fail
-- A delivery failed by the consumer (a reject without requeue, a row that cannot become
-- a message for it).
WITH failed AS (
    UPDATE {jobs} SET state = 'failed', completed_at = now(),
        errors = errors || jsonb_build_array(%(error)s::jsonb || jsonb_build_object('attempt', attempts))
    WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'running' AND taken_by = %(consumer)s
    RETURNING id
)
SELECT pg_notify(%(done)s, id::text) FROM failed;

-- name: size
-- A queue's waiting messages (a purge is the operators' one: admin.sql's purge).
SELECT count(*) FROM {jobs} WHERE queue = %(queue)s AND state IN ('pending', 'scheduled', 'retrying');
