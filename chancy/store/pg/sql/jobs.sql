-- The statements of the jobs table: pushing, reading, claiming, writing outcomes back,
-- cancelling, requeueing, and what a worker hands back. Built and mapped by
-- chancy/store/pg/jobs.py (JobSQL).
--
-- Every statement returning whole jobs lists the same columns in the same order
-- (RECORD_COLUMNS in jobs.py, which maps them): jsonb is read as text and decoded by
-- Chancy's own serializer, so tagged values (datetime, UUID...) come back typed. The live
-- states, written out below wherever a unique key is looked up, are those of the partial
-- unique index (LIVE in chancy/migrations.py). Finished jobs are announced on the done
-- channel up to 100 ids per notification (DONE_IDS_PER_NOTIFICATION in jobs.py).
-- Per-job arrays are sent in binary (the b placeholders): psycopg dumps a list of 100
-- values in binary in well under half the time of its text form.

-- name: get
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key,
       limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency
FROM {jobs} WHERE id = %(id)s

-- name: get_many
SELECT id, queue, func, args::text, kwargs::text, priority, state, attempts, max_attempts,
       scheduled_at, expires_at, created_at, started_at, completed_at, taken_by, unique_key,
       limits::text, backoff::text, meta::text, result::text, errors::text, concurrency_key, concurrency
FROM {jobs} WHERE id = ANY(%(ids)s)

-- name: states
SELECT id, state FROM {jobs} WHERE id = ANY(%(ids)s)

-- name: live_by_unique_key
-- The live holders of unique keys (after an insert skipped a job whose key was taken).
SELECT unique_key, id FROM {jobs}
WHERE unique_key = ANY(%(keys)s) AND state IN ('pending', 'scheduled', 'running', 'retrying')

-- name: notify_pushed
-- Workers of these queues hear of new jobs (after a COPY, which returns nothing).
SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)s::text[]) AS t(queue)

-- name: notify_done
-- Waiters hear that these jobs finished (a claim found them expired).
SELECT pg_notify(%(channel)s, string_agg(id::text, ',')) FROM (
    SELECT id, (row_number() OVER () - 1) / 100 AS part FROM unnest(%(ids)s::uuid[]) AS t(id)
) finished GROUP BY part

-- name: listen_done
LISTEN {done_channel}

-- name: unlisten_all
UNLISTEN *

-- The INSERT of a push names only the columns the jobs set (a plain task.push(x) sends 4
-- values, not 13), so it is assembled at run time, once per set of columns, from the
-- parts below (jobs.py, _insert_query): insert_values for one job (psycopg's named
-- placeholders, or libpq's positional ones on the lean path of a single push),
-- insert_unnest for many (one binary array per column), then, when the jobs have unique
-- keys, insert_unique_key, and always insert_returning. A job with a schedule sets its
-- state from it (insert_scheduled_at, insert_scheduled_state). The notification is part
-- of RETURNING: one statement, one round trip, no CTE to plan. Assembled, e.g.:
--   INSERT INTO jobs (id, queue, func, args) VALUES (%(id)s::uuid, %(queue)s::text,
--   %(func)s::text, %(args)s::jsonb)
--   RETURNING id, CASE WHEN state = 'pending' THEN pg_notify('chancy_pushed', queue) END

-- name: insert_values
INSERT INTO {jobs} ({columns}) VALUES ({values})

-- name: insert_unnest
INSERT INTO {jobs} ({columns}) SELECT {values} FROM unnest({arrays}) AS t({names})

-- name: insert_scheduled_at
COALESCE({at}, now())

-- name: insert_scheduled_state
CASE WHEN {at} > now() THEN 'scheduled' ELSE 'pending' END

-- name: insert_unique_key
-- A job whose unique key a live job holds is skipped: not in RETURNING.
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
    AND state IN ('pending', 'scheduled', 'running', 'retrying') DO NOTHING

-- name: insert_returning
RETURNING id, CASE WHEN state = 'pending' THEN pg_notify({pushed_channel}, queue) END

-- name: copy
-- A push of many plainly pending jobs (no unique key, no schedule): several times faster
-- than the INSERT, no conflict to handle. Of the columns the jobs set, as the INSERT.
COPY {jobs} ({columns}) FROM STDIN

-- The claim, alone (claim) and after a draining worker's outcomes (write_back_and_claim),
-- and those outcomes alone (write_back). write_back_and_claim is write_back's CTEs then
-- claim's, in one statement: one round trip and one commit instead of two, and no
-- write-back beside the claim that a draining worker waits for. SQL cannot name a CTE of
-- another statement, so this file holds their text twice; tests/store/test_jobs_sql.py
-- checks the copies are the same.

-- name: claim
-- Claims up to %(limit)s jobs: the best runnable-now rows and the earliest due
-- scheduled/retrying rows, each read through its own partial index. The chosen rows are
-- then updated by id = ANY(ARRAY(...)), never by a join: the planner sized a join with
-- them from the backlog and, once the table had statistics and was mostly runnable,
-- hash-joined them against a sequential scan of the whole table on every claim. An id
-- array is always read through the key. The queue's runtime settings row (if any) bounds
-- the claim: none while paused; with a rate limit, at most rate_limit starts in any
-- rate_period seconds across all workers. Only a rate-limited queue's row is locked (so
-- its claims take turns); others pay one primary-key read. rate_starts keeps the latest
-- rate_limit start times: enough to count any window exactly. Only the best %(start)s
-- (NULL: all) of the rows not expired get started_at; the others are prefetched. Expired
-- rows finish instead (they take places of the LIMIT: the caller claims again for them).
-- Returned best first, as chosen (an UPDATE's RETURNING has no order of its own), so the
-- started ones come first. Jobs with a concurrency key are left to the keyed claim below:
-- read as before (a filter in ready would change the planner's estimates: with keyed rows
-- common in the table, it read the whole table for a plain queue's claim), not chosen;
-- each row says whether the queue has such jobs waiting (keyed: an initplan, one probe of
-- an index empty on queues without keys), which sends the next claims there.
WITH settings AS (
    SELECT paused_until > now() AS paused FROM {queues} WHERE name = %(queue)s
), limiter AS (
    SELECT name, rate_limit, rate_period, rate_starts FROM {queues}
    WHERE name = %(queue)s AND rate_limit IS NOT NULL
    FOR UPDATE
), budget AS (
    SELECT CASE
        WHEN coalesce((SELECT paused FROM settings), false) THEN 0
        WHEN NOT EXISTS (SELECT 1 FROM limiter) THEN %(limit)s
        ELSE (SELECT greatest(0, least(%(limit)s, l.rate_limit - (
                  SELECT count(*) FROM unnest(l.rate_starts) s
                  WHERE s > now() - make_interval(secs => l.rate_period))))
              FROM limiter l)
    END AS n
), ready AS (
    SELECT id, priority, expires_at, concurrency_key FROM {jobs}
    WHERE queue = %(queue)s AND state = 'pending' AND (SELECT n FROM budget) > 0
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id, priority, expires_at, concurrency_key FROM {jobs}
    WHERE queue = %(queue)s AND state IN ('scheduled', 'retrying')
      AND scheduled_at <= now() AND (SELECT n FROM budget) > 0
    ORDER BY scheduled_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT id, expires_at FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
    WHERE concurrency_key IS NULL
    ORDER BY priority DESC, id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE {jobs} j SET
        state = CASE WHEN j.expires_at <= now() THEN 'expired' ELSE 'running' END,
        attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
        completed_at = CASE WHEN j.expires_at <= now() THEN now() END,
        started_at = CASE WHEN j.expires_at <= now()
                            OR j.id = ANY(ARRAY(
                                SELECT id FROM chosen WHERE NOT coalesce(expires_at <= now(), false)
                                LIMIT %(start)s)) THEN now() END,
        taken_by = %(worker)s
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.id, j.queue, j.func, j.args::text, j.kwargs::text, j.priority, j.state, j.attempts,
              j.max_attempts, j.scheduled_at, j.expires_at, j.created_at, j.started_at, j.completed_at,
              j.taken_by, j.unique_key, j.limits::text, j.backoff::text, j.meta::text, j.result::text,
              j.errors::text, j.concurrency_key, j.concurrency
), counted AS (
    UPDATE {queues} q SET rate_starts = (
        SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') FROM (
            SELECT s FROM unnest(q.rate_starts || array_fill(now(), ARRAY[
                (SELECT count(*) FROM claimed WHERE state = 'running')::int])) s
            ORDER BY s DESC
            LIMIT q.rate_limit
        ) latest)
    FROM limiter l
    WHERE q.name = l.name
)
SELECT * FROM claimed, (SELECT coalesce((SELECT true FROM {jobs} WHERE queue = %(queue)s AND concurrency_key IS NOT NULL
                               AND state IN ('scheduled', 'retrying', 'pending') AND scheduled_at <= now()
                               ORDER BY scheduled_at LIMIT 1), false)) AS waiting (keyed) ORDER BY priority DESC, id

-- name: write_back
-- Outcomes of one worker, many jobs per statement. The guard (still running, still ours,
-- same attempt) makes a late or duplicate write-back change nothing. Waiters hear of
-- finished jobs (the batch in one notification); workers hear of retries that are due
-- now, and of a keyed job's place freed (the next job of its key may start), as they
-- would of a push, instead of finding them at their next poll. A
-- data-modifying CTE runs even when no one reads it, but announced does not: the final
-- SELECT reads it once, as a filter that is always true. Returns the ids that applied.
WITH input AS (
    SELECT * FROM unnest(
        %(ids)b::uuid[], %(states)b::text[], %(results)b::jsonb[],
        %(errors)b::jsonb[], %(delays)b::float8[], %(max_attempts)b::int[], %(attempts)b::int[]
    ) AS t(id, state, result, error, delay, max_attempts, attempt)
), updated AS (
    UPDATE {jobs} j SET
        state = i.state,
        result = COALESCE(i.result, j.result),
        errors = CASE WHEN i.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(
                          i.error || jsonb_build_object('attempt', j.attempts))
                 END,
        scheduled_at = CASE WHEN i.state = 'retrying'
                            THEN now() + make_interval(secs => i.delay)
                            ELSE j.scheduled_at END,
        max_attempts = COALESCE(i.max_attempts, j.max_attempts),
        started_at = COALESCE(j.started_at, now()),
        completed_at = CASE WHEN i.state = 'retrying' THEN NULL ELSE now() END
    FROM input i
    WHERE j.id = i.id AND j.state = 'running' AND j.taken_by = %(worker)s
      AND (i.attempt IS NULL OR j.attempts = i.attempt)
    RETURNING j.id, j.state,
              CASE WHEN (j.state = 'retrying' AND i.delay <= 0) OR j.concurrency_key IS NOT NULL
                   THEN pg_notify(%(pushed_channel)s, j.queue) END
), announced AS (
    SELECT pg_notify(%(channel)s, string_agg(id::text, ',')) FROM (
        SELECT id, (row_number() OVER () - 1) / 100 AS part FROM updated WHERE state <> 'retrying'
    ) finished GROUP BY part
)
SELECT id FROM updated WHERE (SELECT count(*) FROM announced) >= 0

-- name: write_back_and_claim
-- write_back then claim, in one statement (see above). The two updates touch different
-- rows (ours running; others runnable). Returns the claimed jobs.
WITH input AS (
    SELECT * FROM unnest(
        %(ids)b::uuid[], %(states)b::text[], %(results)b::jsonb[],
        %(errors)b::jsonb[], %(delays)b::float8[], %(max_attempts)b::int[], %(attempts)b::int[]
    ) AS t(id, state, result, error, delay, max_attempts, attempt)
), updated AS (
    UPDATE {jobs} j SET
        state = i.state,
        result = COALESCE(i.result, j.result),
        errors = CASE WHEN i.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(
                          i.error || jsonb_build_object('attempt', j.attempts))
                 END,
        scheduled_at = CASE WHEN i.state = 'retrying'
                            THEN now() + make_interval(secs => i.delay)
                            ELSE j.scheduled_at END,
        max_attempts = COALESCE(i.max_attempts, j.max_attempts),
        started_at = COALESCE(j.started_at, now()),
        completed_at = CASE WHEN i.state = 'retrying' THEN NULL ELSE now() END
    FROM input i
    WHERE j.id = i.id AND j.state = 'running' AND j.taken_by = %(worker)s
      AND (i.attempt IS NULL OR j.attempts = i.attempt)
    RETURNING j.id, j.state,
              CASE WHEN (j.state = 'retrying' AND i.delay <= 0) OR j.concurrency_key IS NOT NULL
                   THEN pg_notify(%(pushed_channel)s, j.queue) END
), announced AS (
    SELECT pg_notify(%(channel)s, string_agg(id::text, ',')) FROM (
        SELECT id, (row_number() OVER () - 1) / 100 AS part FROM updated WHERE state <> 'retrying'
    ) finished GROUP BY part
), settings AS (
    SELECT paused_until > now() AS paused FROM {queues} WHERE name = %(queue)s
), limiter AS (
    SELECT name, rate_limit, rate_period, rate_starts FROM {queues}
    WHERE name = %(queue)s AND rate_limit IS NOT NULL
    FOR UPDATE
), budget AS (
    SELECT CASE
        WHEN coalesce((SELECT paused FROM settings), false) THEN 0
        WHEN NOT EXISTS (SELECT 1 FROM limiter) THEN %(limit)s
        ELSE (SELECT greatest(0, least(%(limit)s, l.rate_limit - (
                  SELECT count(*) FROM unnest(l.rate_starts) s
                  WHERE s > now() - make_interval(secs => l.rate_period))))
              FROM limiter l)
    END AS n
), ready AS (
    SELECT id, priority, expires_at, concurrency_key FROM {jobs}
    WHERE queue = %(queue)s AND state = 'pending' AND (SELECT n FROM budget) > 0
    ORDER BY priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id, priority, expires_at, concurrency_key FROM {jobs}
    WHERE queue = %(queue)s AND state IN ('scheduled', 'retrying')
      AND scheduled_at <= now() AND (SELECT n FROM budget) > 0
    ORDER BY scheduled_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT id, expires_at FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
    WHERE concurrency_key IS NULL
    ORDER BY priority DESC, id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE {jobs} j SET
        state = CASE WHEN j.expires_at <= now() THEN 'expired' ELSE 'running' END,
        attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
        completed_at = CASE WHEN j.expires_at <= now() THEN now() END,
        started_at = CASE WHEN j.expires_at <= now()
                            OR j.id = ANY(ARRAY(
                                SELECT id FROM chosen WHERE NOT coalesce(expires_at <= now(), false)
                                LIMIT %(start)s)) THEN now() END,
        taken_by = %(worker)s
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.id, j.queue, j.func, j.args::text, j.kwargs::text, j.priority, j.state, j.attempts,
              j.max_attempts, j.scheduled_at, j.expires_at, j.created_at, j.started_at, j.completed_at,
              j.taken_by, j.unique_key, j.limits::text, j.backoff::text, j.meta::text, j.result::text,
              j.errors::text, j.concurrency_key, j.concurrency
), counted AS (
    UPDATE {queues} q SET rate_starts = (
        SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') FROM (
            SELECT s FROM unnest(q.rate_starts || array_fill(now(), ARRAY[
                (SELECT count(*) FROM claimed WHERE state = 'running')::int])) s
            ORDER BY s DESC
            LIMIT q.rate_limit
        ) latest)
    FROM limiter l
    WHERE q.name = l.name
)
SELECT * FROM claimed, (SELECT coalesce((SELECT true FROM {jobs} WHERE queue = %(queue)s AND concurrency_key IS NOT NULL
                               AND state IN ('scheduled', 'retrying', 'pending') AND scheduled_at <= now()
                               ORDER BY scheduled_at LIMIT 1), false)) AS waiting (keyed) WHERE (SELECT count(*) FROM announced) >= 0 ORDER BY priority DESC, id

-- The keyed claims: what a queue's claims run while it has jobs with a concurrency key
-- waiting (claim_steps in jobs.py). A job of key K (in queue Q) starts only while fewer
-- than its limit of Q's K jobs are running, counted across every worker; jobs of a full
-- key are skipped, not waited for, so they block neither other keys nor unkeyed jobs.
-- Two statements, each run as one transaction of claim_keyed_lock then itself, sent in
-- one pipeline (one round trip):
-- - claim_keyed reads the front of the queue: its best `limit` pending rows (and due
--   rows, as the plain claim), each with its key's running count. Cheap while keys
--   interleave (1,000 keys: one index read per job), but a full key's rows ahead take
--   places of that read (blocked).
-- - claim_keyed_heads reads the queue key by key (a loose index scan of
--   jobs_pending_by_key: one probe per key for its next key and its best job's limit,
--   one count of its running jobs, then its best jobs up to its free places, none for a
--   full key), plus the unkeyed pending rows as one more range of that index: a full
--   key's backlog is never read, whatever its size; its cost grows with the number of
--   keys instead. claim_steps sends it when claim_keyed came short because it was
--   blocked, and for every claim of a fair queue (Queue(..., fair_keys=True)): its
--   fair parameter orders the candidates round-robin between keys (each key's best job, by priority
--   then age, before a second job of any key; unkeyed jobs are one more key), otherwise
--   by priority then age across keys, as claim_keyed.
-- Their rows say, besides the jobs, whether a candidate of a free key was left for want of
-- places (crowded), whether rows of full keys took places of claim_keyed's read
-- (blocked; never for claim_keyed_heads, which reads none) and whether keyed jobs still
-- wait (keyed: those it did not take); they always return a row (one of NULL jobs when
-- they claimed none) to say so.
--
-- Why no key ever has more than its limit running (READ COMMITTED):
-- 1. Only claim_keyed and claim_keyed_heads move a keyed job to running: the plain claims
--    above take only rows without a key (the key of a row never changes after its
--    insert), and no other statement of the store sets state = 'running'.
-- 2. Both run only after claim_keyed_lock, a transaction-level advisory lock of their
--    queue, in the same transaction; so the keyed claims of one queue run one at a time,
--    each holding the lock until its commit.
-- 3. Each statement of a READ COMMITTED transaction takes its snapshot when it starts;
--    the claim's starts after the lock is granted, so after the previous holder
--    committed: it sees every keyed job that a keyed claim ever made running.
-- 4. Jobs leave running (outcome, cancel, recovery, release, rate-gate hand-back) at any
--    time; one that left after the snapshot is still counted: the count can only be
--    high (a place found a claim later), never low.
-- So the count a candidate is checked against is at least the running jobs of its key at
-- commit, other than those this claim adds; the places it adds are counted by `place`
-- (the candidate's rank among this claim's candidates of its key), and a candidate is
-- taken only if running + place <= its limit (fitting: the same check in both). Counting
-- is read through the partial index of running keyed jobs (a LATERAL count, once per
-- candidate in claim_keyed, once per key in claim_keyed_heads), so there is no counter
-- row to keep in step with every way out of running. claim_keyed_heads' per-key LIMIT
-- (its best job's limit minus running) only bounds what it reads; what it takes is
-- still decided by that check.
-- A candidate of a free key beyond its places is dropped (crowded: the claim may come
-- short while claimable jobs remain), and claim_steps claims again for the places left.

-- name: claim_keyed_lock
SELECT pg_advisory_xact_lock(%(lock)s)

-- name: claim_keyed
WITH settings AS (
    SELECT paused_until > now() AS paused FROM {queues} WHERE name = %(queue)s
), limiter AS (
    SELECT name, rate_limit, rate_period, rate_starts FROM {queues}
    WHERE name = %(queue)s AND rate_limit IS NOT NULL
    FOR UPDATE
), budget AS (
    SELECT CASE
        WHEN coalesce((SELECT paused FROM settings), false) THEN 0
        WHEN NOT EXISTS (SELECT 1 FROM limiter) THEN %(limit)s
        ELSE (SELECT greatest(0, least(%(limit)s, l.rate_limit - (
                  SELECT count(*) FROM unnest(l.rate_starts) s
                  WHERE s > now() - make_interval(secs => l.rate_period))))
              FROM limiter l)
    END AS n
), ready AS (
    SELECT j.id, j.priority, j.expires_at, j.concurrency_key, j.concurrency, r.running FROM {jobs} j
    CROSS JOIN LATERAL (
        SELECT count(*) AS running FROM {jobs} r WHERE r.queue = %(queue)s AND r.concurrency_key = j.concurrency_key
          AND r.state = 'running' AND r.concurrency_key IS NOT NULL) r
    WHERE j.queue = %(queue)s AND j.state = 'pending' AND (SELECT n FROM budget) > 0
    ORDER BY j.priority DESC, j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), due AS (
    SELECT j.id, j.priority, j.expires_at, j.concurrency_key, j.concurrency, r.running FROM {jobs} j
    CROSS JOIN LATERAL (
        SELECT count(*) AS running FROM {jobs} r WHERE r.queue = %(queue)s AND r.concurrency_key = j.concurrency_key
          AND r.state = 'running' AND r.concurrency_key IS NOT NULL) r
    WHERE j.queue = %(queue)s AND j.state IN ('scheduled', 'retrying')
      AND j.scheduled_at <= now() AND (SELECT n FROM budget) > 0
      AND (j.concurrency_key IS NULL OR r.running < j.concurrency)
    ORDER BY j.scheduled_at
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), candidates AS (
    SELECT c.*, coalesce(c.expires_at <= now(), false) AS expired,
           row_number() OVER (PARTITION BY c.concurrency_key, coalesce(c.expires_at <= now(), false)
                              ORDER BY c.priority DESC, c.id) AS place
    FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
), fitting AS (
    SELECT c.*, c.expired OR c.concurrency_key IS NULL OR c.place + c.running <= c.concurrency AS fits
    FROM candidates c
), chosen AS (
    SELECT id, expires_at FROM fitting WHERE fits
    ORDER BY priority DESC, id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE {jobs} j SET
        state = CASE WHEN j.expires_at <= now() THEN 'expired' ELSE 'running' END,
        attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
        completed_at = CASE WHEN j.expires_at <= now() THEN now() END,
        started_at = CASE WHEN j.expires_at <= now()
                            OR j.id = ANY(ARRAY(
                                SELECT id FROM chosen WHERE NOT coalesce(expires_at <= now(), false)
                                LIMIT %(start)s)) THEN now() END,
        taken_by = %(worker)s
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.id, j.queue, j.func, j.args::text, j.kwargs::text, j.priority, j.state, j.attempts,
              j.max_attempts, j.scheduled_at, j.expires_at, j.created_at, j.started_at, j.completed_at,
              j.taken_by, j.unique_key, j.limits::text, j.backoff::text, j.meta::text, j.result::text,
              j.errors::text, j.concurrency_key, j.concurrency
), counted AS (
    UPDATE {queues} q SET rate_starts = (
        SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') FROM (
            SELECT s FROM unnest(q.rate_starts || array_fill(now(), ARRAY[
                (SELECT count(*) FROM claimed WHERE state = 'running')::int])) s
            ORDER BY s DESC
            LIMIT q.rate_limit
        ) latest)
    FROM limiter l
    WHERE q.name = l.name
)
SELECT claimed.*, EXISTS (SELECT 1 FROM fitting WHERE NOT fits AND running < concurrency) AS crowded,
       EXISTS (SELECT 1 FROM fitting WHERE NOT fits AND running >= concurrency) AS blocked,
       coalesce((SELECT true FROM {jobs} w WHERE w.queue = %(queue)s AND w.concurrency_key IS NOT NULL
                 AND w.state IN ('scheduled', 'retrying', 'pending') AND w.scheduled_at <= now()
                 AND w.id NOT IN (SELECT id FROM chosen)
                 ORDER BY w.scheduled_at LIMIT 1), false) AS keyed
FROM (SELECT 1) AS always LEFT JOIN claimed ON true ORDER BY claimed.priority DESC, claimed.id

-- name: claim_keyed_heads
-- Key by key (see the keyed claims above); no key is visited while the budget is 0.
-- unkeyed_ready orders by concurrency_key, all NULL there: the index's order, so the
-- planner reads it in order instead of sorting every unkeyed pending job.
WITH RECURSIVE settings AS (
    SELECT paused_until > now() AS paused FROM {queues} WHERE name = %(queue)s
), limiter AS (
    SELECT name, rate_limit, rate_period, rate_starts FROM {queues}
    WHERE name = %(queue)s AND rate_limit IS NOT NULL
    FOR UPDATE
), budget AS (
    SELECT CASE
        WHEN coalesce((SELECT paused FROM settings), false) THEN 0
        WHEN NOT EXISTS (SELECT 1 FROM limiter) THEN %(limit)s
        ELSE (SELECT greatest(0, least(%(limit)s, l.rate_limit - (
                  SELECT count(*) FROM unnest(l.rate_starts) s
                  WHERE s > now() - make_interval(secs => l.rate_period))))
              FROM limiter l)
    END AS n
), keys AS (
    (SELECT concurrency_key AS key, concurrency FROM {jobs}
     WHERE queue = %(queue)s AND state = 'pending' AND concurrency_key IS NOT NULL AND (SELECT n FROM budget) > 0
     ORDER BY concurrency_key, priority DESC, id LIMIT 1)
    UNION ALL
    SELECT next.key, next.concurrency FROM keys k CROSS JOIN LATERAL (
        SELECT concurrency_key AS key, concurrency FROM {jobs}
        WHERE queue = %(queue)s AND state = 'pending' AND concurrency_key > k.key
        ORDER BY concurrency_key, priority DESC, id LIMIT 1) next
), free AS (
    SELECT k.key, k.concurrency - r.running AS places, r.running FROM keys k
    CROSS JOIN LATERAL (
        SELECT count(*) AS running FROM {jobs} r WHERE r.queue = %(queue)s AND r.concurrency_key = k.key
          AND r.state = 'running' AND r.concurrency_key IS NOT NULL) r
), keyed_ready AS (
    SELECT j.*, f.running FROM free f CROSS JOIN LATERAL (
        SELECT id, priority, expires_at, concurrency_key, concurrency FROM {jobs}
        WHERE queue = %(queue)s AND state = 'pending' AND concurrency_key = f.key AND (SELECT n FROM budget) > 0
        ORDER BY priority DESC, id
        LIMIT least(%(limit)s, greatest(f.places, 0))
        FOR UPDATE SKIP LOCKED) j
), unkeyed_ready AS (
    SELECT id, priority, expires_at, concurrency_key, concurrency, 0::bigint AS running FROM {jobs}
    WHERE queue = %(queue)s AND state = 'pending' AND concurrency_key IS NULL AND (SELECT n FROM budget) > 0
    ORDER BY concurrency_key, priority DESC, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT * FROM keyed_ready UNION ALL SELECT * FROM unkeyed_ready
), due AS (
    SELECT j.id, j.priority, j.expires_at, j.concurrency_key, j.concurrency, r.running FROM {jobs} j
    CROSS JOIN LATERAL (
        SELECT count(*) AS running FROM {jobs} r WHERE r.queue = %(queue)s AND r.concurrency_key = j.concurrency_key
          AND r.state = 'running' AND r.concurrency_key IS NOT NULL) r
    WHERE j.queue = %(queue)s AND j.state IN ('scheduled', 'retrying')
      AND j.scheduled_at <= now() AND (SELECT n FROM budget) > 0
      AND (j.concurrency_key IS NULL OR r.running < j.concurrency)
    ORDER BY j.scheduled_at
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), candidates AS (
    SELECT c.*, coalesce(c.expires_at <= now(), false) AS expired,
           row_number() OVER (PARTITION BY c.concurrency_key, coalesce(c.expires_at <= now(), false)
                              ORDER BY c.priority DESC, c.id) AS place
    FROM (SELECT * FROM ready UNION ALL SELECT * FROM due) c
), fitting AS (
    SELECT c.*, c.expired OR c.concurrency_key IS NULL OR c.place + c.running <= c.concurrency AS fits
    FROM candidates c
), chosen AS (
    SELECT id, expires_at FROM fitting WHERE fits
    ORDER BY CASE WHEN %(fair)s THEN place END, priority DESC, id
    LIMIT (SELECT n FROM budget)
), claimed AS (
    UPDATE {jobs} j SET
        state = CASE WHEN j.expires_at <= now() THEN 'expired' ELSE 'running' END,
        attempts = j.attempts + CASE WHEN j.expires_at <= now() THEN 0 ELSE 1 END,
        completed_at = CASE WHEN j.expires_at <= now() THEN now() END,
        started_at = CASE WHEN j.expires_at <= now()
                            OR j.id = ANY(ARRAY(
                                SELECT id FROM chosen WHERE NOT coalesce(expires_at <= now(), false)
                                LIMIT %(start)s)) THEN now() END,
        taken_by = %(worker)s
    WHERE j.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING j.id, j.queue, j.func, j.args::text, j.kwargs::text, j.priority, j.state, j.attempts,
              j.max_attempts, j.scheduled_at, j.expires_at, j.created_at, j.started_at, j.completed_at,
              j.taken_by, j.unique_key, j.limits::text, j.backoff::text, j.meta::text, j.result::text,
              j.errors::text, j.concurrency_key, j.concurrency
), counted AS (
    UPDATE {queues} q SET rate_starts = (
        SELECT coalesce(array_agg(s ORDER BY s DESC), '{{}}') FROM (
            SELECT s FROM unnest(q.rate_starts || array_fill(now(), ARRAY[
                (SELECT count(*) FROM claimed WHERE state = 'running')::int])) s
            ORDER BY s DESC
            LIMIT q.rate_limit
        ) latest)
    FROM limiter l
    WHERE q.name = l.name
)
SELECT claimed.*, EXISTS (SELECT 1 FROM fitting WHERE NOT fits AND running < concurrency) AS crowded,
       false AS blocked,
       coalesce((SELECT true FROM {jobs} w WHERE w.queue = %(queue)s AND w.concurrency_key IS NOT NULL
                 AND w.state IN ('scheduled', 'retrying', 'pending') AND w.scheduled_at <= now()
                 AND w.id NOT IN (SELECT id FROM chosen)
                 ORDER BY w.scheduled_at LIMIT 1), false) AS keyed
FROM (SELECT 1) AS always LEFT JOIN claimed ON true ORDER BY claimed.priority DESC, claimed.id

-- name: keyed_waiting
-- Whether the queue has keyed jobs waiting (asked after a plain claim that returned no
-- row to say it): while it does, its claims are keyed. Written as the first row in the
-- index's order, not EXISTS: Postgres drops an EXISTS' ORDER BY, and with keyed rows
-- common it read the table from its start, past every finished row, for the first one.
SELECT coalesce((SELECT true FROM {jobs} WHERE queue = %(queue)s AND concurrency_key IS NOT NULL
                               AND state IN ('scheduled', 'retrying', 'pending') AND scheduled_at <= now()
                               ORDER BY scheduled_at LIMIT 1), false)

-- name: cancel
-- A live job finishes cancelled; its worker (cancel channel) and its waiters (done
-- channel) hear of it. Returns the state it had, if it was live.
WITH target AS (
    SELECT id, state FROM {jobs} WHERE id = %(id)s FOR UPDATE
), cancelled AS (
    UPDATE {jobs} j SET state = 'cancelled', completed_at = now()
    FROM target
    WHERE j.id = target.id AND target.state IN ('pending', 'scheduled', 'running', 'retrying')
    RETURNING j.id, target.state AS was
)
SELECT was, pg_notify(%(cancel_channel)s, id::text), pg_notify(%(done_channel)s, id::text)
FROM cancelled

-- name: release_unknown
-- Rows running under a worker's id that the worker does not know of. Either it lost the
-- answer of the claim that took them, so they never started: back to pending, the attempt
-- refunded. Or (lost) they are a previous life's of a worker that restarted under the
-- same id: that attempt counts, as recovery's, unless the job was only prefetched, never
-- started (started_at NULL). A job that goes back pending never ran here: its start
-- (written by its claim or a mark before the worker handed it over) is cleared.
WITH stray AS (
    SELECT id FROM {jobs}
    WHERE state = 'running' AND taken_by = %(worker)s AND queue = %(queue)s
      AND NOT id = ANY(%(owned)s::uuid[])
    FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE {jobs} j SET
        state = CASE WHEN NOT (%(lost)s AND j.started_at IS NOT NULL) THEN 'pending'
                     WHEN j.attempts < j.max_attempts THEN 'retrying' ELSE 'failed' END,
        attempts = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN j.attempts ELSE greatest(j.attempts - 1, 0) END,
        scheduled_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN now() ELSE j.scheduled_at END,
        completed_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) AND j.attempts >= j.max_attempts THEN now() END,
        started_at = CASE WHEN (%(lost)s AND j.started_at IS NOT NULL) THEN j.started_at END,
        taken_by = NULL,
        errors = CASE WHEN NOT (%(lost)s AND j.started_at IS NOT NULL) THEN j.errors ELSE j.errors || jsonb_build_array(jsonb_build_object(
            'type', 'chancy.WorkerLost',
            'message', format('worker %%s restarted while running attempt %%s of %%s',
                              j.taken_by, j.attempts, j.max_attempts),
            'traceback', NULL, 'at', now(), 'attempt', j.attempts, 'worker', j.taken_by)) END
    WHERE j.id = ANY(ARRAY(SELECT id FROM stray))
    RETURNING j.id, j.queue, j.state
)
SELECT id, CASE WHEN state = 'failed' THEN pg_notify(%(done_channel)s, id::text)
                ELSE pg_notify(%(channel)s, queue) END
FROM released

-- name: requeue
-- A failed, cancelled or expired job runs again, with room for one more attempt; not
-- while another live job holds its unique key (the live holder wins, as at a push).
WITH requeued AS (
    UPDATE {jobs} j SET state = 'pending', scheduled_at = now(), completed_at = NULL,
        taken_by = NULL, max_attempts = GREATEST(j.max_attempts, j.attempts + 1)
    WHERE j.id = %(id)s AND j.state IN ('failed', 'cancelled', 'expired')
      AND NOT EXISTS (SELECT 1 FROM {jobs} holder
                      WHERE holder.unique_key = j.unique_key AND holder.id <> j.id
                        AND holder.state IN ('pending', 'scheduled', 'running', 'retrying'))
    RETURNING j.id, j.queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM requeued
