-- The statements of task rate limits (see chancy/rate_limits.py): one row per
-- rate-limited task holding its recent start times, and the gate a worker runs on the
-- jobs of such tasks right after claiming them. Built and mapped by
-- chancy/store/pg/rates.py (RateSQL).

-- name: ensure
-- Create the rows of tasks never gated before in this database.
INSERT INTO {task_rates} (task) SELECT unnest(%(tasks)s::text[]) ON CONFLICT (task) DO NOTHING

-- name: gate
-- The claimed jobs of rate-limited tasks: those whose time had come (deferred
-- here before, retried, scheduled) first, then newly pushed ones, best first. Each
-- task's row is locked (in name order, so concurrent gates cannot deadlock) and
-- its starts in the last period counted: the first `count - recent` jobs start
-- now and their start times are recorded; the others go back to wait, with the
-- attempt the claim charged given back. A job whose time had come waits just until
-- enough recorded starts leave the window (the j-th over budget: the j-th
-- oldest start + period, wrapping a period later); a new job also joins the end
-- of the task's line (`deferred_until`), spaced period/count apart, so a backlog
-- comes back at the rate it can start rather than all at once. Every job write
-- is guarded by owner and attempt, like a write-back.
WITH claimed AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(funcs)s::text[],
                         %(waited)s::bool[])
        WITH ORDINALITY AS t(id, attempt, func, waited, ord)
), limits AS (
    SELECT * FROM unnest(%(tasks)s::text[], %(counts)s::int[], %(periods)s::float8[])
        AS t(task, n, period)
), locked AS (
    SELECT task, starts, deferred_until FROM {task_rates}
    WHERE task = ANY(%(tasks)s::text[])
    ORDER BY task
    FOR UPDATE
), windows AS (
    SELECT l.task, l.n, l.period, k.task IS NOT NULL AS known, k.deferred_until,
           greatest(0, l.n - cardinality(w.recent)) AS free,
           ARRAY(SELECT s FROM unnest(w.recent || array_fill(now(), ARRAY[least(
                     greatest(0, l.n - cardinality(w.recent)),
                     (SELECT count(*) FROM claimed c WHERE c.func = l.task))::int])) s
                 ORDER BY s) AS starts
    FROM limits l
    LEFT JOIN locked k ON k.task = l.task
    CROSS JOIN LATERAL (
        SELECT ARRAY(SELECT s FROM unnest(k.starts) s
                     WHERE s > now() - make_interval(secs => l.period) ORDER BY s) AS recent
    ) w
), ranked AS (
    SELECT c.id, c.attempt, c.waited, w.task, w.known, w.n, w.period, w.starts,
           greatest(w.starts[cardinality(w.starts) - w.n + 1] + make_interval(secs => w.period),
                    w.deferred_until) AS line_end,
           row_number() OVER (PARTITION BY c.func ORDER BY c.ord) - 1 - w.free AS j,
           greatest(0, count(*) FILTER (WHERE c.waited) OVER (PARTITION BY c.func) - w.free) AS waited_over
    FROM claimed c JOIN windows w ON w.task = c.func
), verdicts AS (
    SELECT id, attempt, task, known, j, period / n AS gap, due
    FROM ranked CROSS JOIN LATERAL (
        SELECT starts[cardinality(starts) - n + mod(j, n)::int + 1]
               + make_interval(secs => period * (j / n + 1)) AS exact
    ) e CROSS JOIN LATERAL (
        SELECT CASE WHEN j < 0 THEN NULL
                    WHEN waited THEN e.exact
                    ELSE greatest(e.exact, line_end + make_interval(secs => period * (j - waited_over) / n))
               END AS due
    ) d
), settled AS (
    UPDATE {jobs} jb SET
        state = CASE WHEN v.j < 0 THEN jb.state
                     WHEN jb.attempts > 1 THEN 'retrying' ELSE 'scheduled' END,
        attempts = jb.attempts - CASE WHEN v.j < 0 THEN 0 ELSE 1 END,
        taken_by = CASE WHEN v.j < 0 THEN jb.taken_by END,
        started_at = CASE WHEN v.j < 0 THEN now() END,
        scheduled_at = coalesce(v.due, jb.scheduled_at)
    FROM verdicts v
    WHERE jb.id = v.id AND v.known
      AND jb.state = 'running' AND jb.taken_by = %(worker)s AND jb.attempts = v.attempt
    RETURNING jb.id, v.j, v.due
), counted AS (
    UPDATE {task_rates} r SET
        starts = w.starts,
        deferred_until = greatest(r.deferred_until, (
            SELECT max(v.due + make_interval(secs => v.gap)) FROM verdicts v WHERE v.task = w.task))
    FROM windows w
    WHERE r.task = w.task AND w.known
)
SELECT id, CASE WHEN j < 0 THEN 'run' ELSE 'wait' END,
       extract(epoch FROM due - now())::float8, NULL FROM settled
UNION ALL
SELECT id, 'unknown', NULL, task FROM verdicts WHERE NOT known
