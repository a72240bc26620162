-- The cluster's chores, run by its leader: recovery of the jobs of workers that stopped
-- heartbeating, and pruning of finished jobs. Channels are literals of the app's prefix:
-- {pushed_channel} (a queue has jobs to claim), {done_channel} (a job finished).

-- name: recover
-- Forget expired workers and send back up to batch jobs they held. A job never
-- started (prefetched) goes back pending with its attempt refunded; a started one is
-- retried, or fails once out of attempts, with a chancy.WorkerLost error recorded.
-- Rows a CTE locked are written by id = ANY(ARRAY(...)), not by a join, which the
-- planner sized from the batch and ran as a sequential scan of the whole table (see the
-- claim in jobs.sql). Answers (id, new state) per job sent back.
WITH dead AS (
    DELETE FROM {workers} WHERE expires_at < now() RETURNING worker_id
), lost AS (
    SELECT j.id FROM {jobs} j
    WHERE j.state = 'running'
      AND (j.taken_by IN (SELECT worker_id FROM dead)
           OR NOT EXISTS (SELECT 1 FROM {workers} w WHERE w.worker_id = j.taken_by))
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
), recovered AS (
    UPDATE {jobs} j SET
        state = CASE WHEN j.started_at IS NULL THEN 'pending'
                     WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'failed' END,
        attempts = CASE WHEN j.started_at IS NULL THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        taken_by = CASE WHEN j.started_at IS NULL THEN NULL ELSE j.taken_by END,
        scheduled_at = CASE WHEN j.started_at IS NULL THEN j.scheduled_at
                            WHEN j.attempts < j.max_attempts THEN now() ELSE j.scheduled_at END,
        completed_at = CASE WHEN j.started_at IS NULL OR j.attempts < j.max_attempts THEN NULL
                            ELSE now() END,
        errors = CASE WHEN j.started_at IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(jsonb_build_object(
            'type', 'chancy.WorkerLost',
            'message', format('worker %%s stopped heartbeating while running attempt %%s of %%s',
                              j.taken_by, j.attempts, j.max_attempts),
            'traceback', NULL, 'at', now(), 'attempt', j.attempts, 'worker', j.taken_by)) END
    WHERE j.id = ANY(ARRAY(SELECT id FROM lost))
    RETURNING j.id, j.queue, j.state
)
SELECT id, state, CASE WHEN state = 'failed' THEN pg_notify({done_channel}, id::text)
                       ELSE pg_notify({pushed_channel}, queue) END
FROM recovered;

-- name: prune
-- Delete up to batch jobs in states (finished states) of queues (NULL: every
-- queue) that finished more than age seconds ago. The literal state list matches the
-- partial index jobs_finished; ORDER BY its key with SKIP LOCKED keeps each batch a short
-- index range scan that never waits for a row the claim path holds.
WITH doomed AS (
    SELECT id FROM {jobs}
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
      AND state = ANY(%(states)s::text[])
      AND completed_at < now() - make_interval(secs => %(age)s)
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY completed_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {jobs} j WHERE j.id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING j.id;
