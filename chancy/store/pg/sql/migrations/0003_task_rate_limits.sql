-- description: task rate limits

-- name: task_rates
-- One row per rate-limited task: the start times of its jobs within the last period (the
-- limit itself is declared by the task's code), and until when jobs over the limit have
-- already been given times to come back (see the gate in rates.sql).
CREATE TABLE {task_rates} (
    task text PRIMARY KEY,
    starts timestamptz[] NOT NULL DEFAULT '{{}}',
    deferred_until timestamptz NOT NULL DEFAULT '-infinity'
);
