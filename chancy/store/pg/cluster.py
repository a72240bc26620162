"""Statements of the cluster plugins: recovery of jobs lost with their worker, pruning of
finished jobs, cron schedules and runtime queue settings. Composed like
:mod:`chancy.queues.sql` (identifiers from the prefix, values only as parameters) and run
through the same drivers, so every sync and async caller shares them."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Sequence

from psycopg import sql

from chancy import serialization
from chancy.job import Backoff, Job, Limit
from chancy.migrations import Names
from chancy.store.pg.statements import Statement

FINISHED = "('succeeded', 'failed', 'cancelled', 'expired')"


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """A queue's runtime settings (``None``: the code's own setting applies). An
    open-ended pause (Postgres' infinity) reads as ``paused_until`` = 9999-12-31 UTC."""

    name: str
    concurrency: int | None
    paused_until: datetime | None
    rate_limit: int | None
    rate_period: float | None
    updated_at: datetime

    @property
    def paused(self) -> bool:
        """Paused as of when the row was read (an ``until`` may have passed since)."""
        return self.paused_until is not None

    @property
    def paused_until_resumed(self) -> bool:
        """Paused with no end time."""
        return self.paused_until is not None and self.paused_until.year == datetime.max.year


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A stored cron schedule (see :mod:`chancy.plugins.cron`)."""

    namespace: str | None  # the app it belongs to (None: stored before namespaces, no app's yet)
    name: str
    job: Job  # the template each firing is made from
    cron: str | None
    every: float | None
    timezone: str
    expires_in: float | None
    next_fire_at: datetime
    last_fired_at: datetime | None
    enabled: bool
    read_at: datetime  # the database clock when the row was read


def dumps_job_template(job: Job) -> str:
    """A job's reusable part (no id, times or unique key) as stored JSON."""
    serialization.dumps_arguments(job.func, job.args, job.kwargs)  # fails early, naming the task
    return serialization.dumps({
        "func": job.func, "args": list(job.args), "kwargs": dict(job.kwargs), "queue": job.queue,
        "priority": job.priority, "max_attempts": job.max_attempts,
        "limits": [lim.to_dict() for lim in job.limits],
        "backoff": job.backoff.to_dict() if job.backoff else None, "meta": dict(job.meta),
    })


def loads_job_template(text: str) -> Job:
    data: dict[str, Any] = serialization.loads(text)
    return Job(
        data["func"], args=data["args"], kwargs=data["kwargs"], queue=data["queue"],
        priority=data["priority"], max_attempts=data["max_attempts"],
        limits=[Limit.from_dict(d) for d in data["limits"]],
        backoff=Backoff.from_dict(data["backoff"]) if data["backoff"] else None, meta=data["meta"],
    )


class ClusterSQL:
    """The cluster statements for one table prefix, composed once."""

    def __init__(self, names: Names) -> None:
        f = names.fields()
        self.names = names
        self.queues_channel = names.channel("queues")
        pushed, done = names.channel("pushed"), names.channel("done")
        # Rows a CTE locked are written by id = ANY(ARRAY(...)), not by a join, which the
        # planner sized from the batch and ran as a sequential scan of the whole table
        # (see the claim in chancy/queues/sql.py).
        self._recover = sql.SQL(
            """
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
            SELECT id, state, CASE WHEN state = 'failed' THEN pg_notify({done}, id::text)
                                   ELSE pg_notify({pushed}, queue) END
            FROM recovered
            """
        ).format(done=sql.Literal(done), pushed=sql.Literal(pushed), **f)
        # The literal state list matches the partial index {jobs_finished}; ORDER BY its
        # key with SKIP LOCKED keeps each batch a short index range scan.
        self._prune = sql.SQL(
            """
            WITH doomed AS (
                SELECT id FROM {jobs}
                WHERE state IN """ + FINISHED + """
                  AND state = ANY(%(states)s::text[])
                  AND completed_at < now() - make_interval(secs => %(age)s)
                  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
                ORDER BY completed_at
                LIMIT %(batch)s
                FOR UPDATE SKIP LOCKED
            )
            DELETE FROM {jobs} j WHERE j.id = ANY(ARRAY(SELECT id FROM doomed)) RETURNING j.id
            """
        ).format(**f)
        # --- cron: every statement is scoped to one namespace (an app's schedules) ---------
        self._cron_upsert = sql.SQL(
            """
            INSERT INTO {cron} (namespace, name, job, cron, every, timezone, expires_in, next_fire_at, enabled)
            VALUES (%(namespace)s, %(name)s, %(job)s::jsonb, %(cron)s, %(every)s, %(timezone)s, %(expires_in)s,
                    %(next_fire_at)s, %(enabled)s)
            ON CONFLICT (namespace, name) DO UPDATE SET
                job = EXCLUDED.job, expires_in = EXCLUDED.expires_in, enabled = EXCLUDED.enabled,
                updated_at = now(),
                -- An unchanged timing keeps its next firing: redeploying neither repeats
                -- nor skips a tick.
                next_fire_at = CASE
                    WHEN ({cron}.cron, {cron}.every, {cron}.timezone)
                         IS NOT DISTINCT FROM (EXCLUDED.cron, EXCLUDED.every, EXCLUDED.timezone)
                    THEN {cron}.next_fire_at ELSE EXCLUDED.next_fire_at END,
                cron = EXCLUDED.cron, every = EXCLUDED.every, timezone = EXCLUDED.timezone
            """
        ).format(**f)
        # Rows stored before namespaces by a Celery app's beat (migration 5) belong to no
        # namespace: the app that names one takes it over, timing and next tick included;
        # a leftover twin of a row the app already has is dropped.
        self._cron_adopt = sql.SQL(
            """
            WITH adopted AS (
                UPDATE {cron} c SET namespace = %(namespace)s, updated_at = now()
                WHERE c.namespace IS NULL AND c.name = ANY(%(names)s::text[])
                  AND NOT EXISTS (SELECT 1 FROM {cron} o WHERE o.namespace = %(namespace)s AND o.name = c.name)
                RETURNING c.name
            )
            DELETE FROM {cron} c
            WHERE c.namespace IS NULL AND c.name = ANY(%(names)s::text[])
              AND c.name NOT IN (SELECT name FROM adopted)
            """
        ).format(**f)
        cron_cols = sql.SQL(
            "namespace, name, job::text, cron, every, timezone, expires_in, next_fire_at, last_fired_at, enabled, now()"
        )
        self._cron_due = sql.SQL(
            """
            SELECT {cols} FROM {cron}
            WHERE enabled AND namespace = %(namespace)s AND next_fire_at <= now()
            ORDER BY next_fire_at
            LIMIT %(batch)s
            FOR UPDATE SKIP LOCKED
            """
        ).format(cols=cron_cols, **f)
        self._cron_advance = sql.SQL(
            """
            UPDATE {cron} SET next_fire_at = %(next)s, last_fired_at = coalesce(%(fired)s, last_fired_at),
                              updated_at = now()
            WHERE namespace = %(namespace)s AND name = %(name)s AND next_fire_at = %(expected)s
            """
        ).format(**f)
        self._cron_wait = sql.SQL(
            "SELECT extract(epoch FROM min(next_fire_at) - now())::float8 FROM {cron} "
            "WHERE enabled AND namespace = %(namespace)s"
        ).format(**f)
        self._cron_list = sql.SQL(
            "SELECT {cols} FROM {cron} WHERE namespace = %(namespace)s ORDER BY name"
        ).format(cols=cron_cols, **f)
        self._cron_delete = sql.SQL(
            "DELETE FROM {cron} WHERE namespace = %(namespace)s AND name = %(name)s"
        ).format(**f)
        self._cron_delete_others = sql.SQL(
            """
            DELETE FROM {cron}
            WHERE namespace = %(namespace)s AND starts_with(name, %(prefix)s) AND NOT name = ANY(%(keep)s::text[])
            """
        ).format(**f)
        self._cron_try_lead = sql.SQL("SELECT pg_try_advisory_lock(%(key)s)")
        self.now = Statement(sql.SQL("SELECT now()"), {}, lambda rows: rows[0][0])
        # --- queue settings ---------------------------------------------------------------
        notify = sql.SQL("pg_notify({channel}, %(name)s)").format(channel=sql.Literal(self.queues_channel))
        self._queue_upsert = sql.SQL(
            """
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
            SELECT {notify} FROM changed
            """
        ).format(notify=notify, **f)
        self._queue_delete = sql.SQL(
            """
            WITH gone AS (DELETE FROM {queues} WHERE name = %(name)s RETURNING name),
            purged AS (
                DELETE FROM {jobs} WHERE %(purge)s AND queue = %(name)s
                  AND state IN ('pending', 'scheduled', 'retrying')
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM purged), {notify}
            """
        ).format(notify=notify, **f)
        self._queue_list = sql.SQL(
            """
            SELECT name, concurrency,
                   -- An open-ended pause is 'infinity', which Python cannot load: it
                   -- reads as the last day datetime can hold in any time zone.
                   CASE WHEN paused_until > now()
                        THEN LEAST(paused_until, timestamptz '9999-12-31 00:00:00+00') END,
                   rate_limit, rate_period, updated_at
            FROM {queues}
            WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])
            ORDER BY name
            """
        ).format(**f)

    # --- recovery and pruning -------------------------------------------------------------
    def recover(self, batch: int) -> Statement:
        """Forget expired workers and send back up to ``batch`` jobs they held: ``{id: state}``."""
        return Statement(self._recover, {"batch": batch}, lambda rows: {r[0]: r[1] for r in rows})

    def prune(self, states: Sequence[str], age: float, queues: Sequence[str] | None, batch: int) -> Statement:
        params = {"states": list(states), "age": float(age), "queues": list(queues) if queues else None,
                  "batch": batch}
        return Statement(self._prune, params, len)

    # --- cron --------------------------------------------------------------------------------
    def cron_upsert(self, params: dict[str, Any]) -> Statement:
        return Statement(self._cron_upsert, params)

    def cron_adopt(self, namespace: str, names: Sequence[str]) -> Statement:
        return Statement(self._cron_adopt, {"namespace": namespace, "names": list(names)})

    def cron_due(self, namespace: str, batch: int) -> Statement:
        return Statement(self._cron_due, {"namespace": namespace, "batch": batch}, _cron_rows)

    def cron_advance(self, schedule: "Schedule", next_: datetime, fired: datetime | None) -> Statement:
        """Move ``schedule`` on to ``next_``, if no one else did since it was read."""
        params = {"namespace": schedule.namespace, "name": schedule.name, "expected": schedule.next_fire_at,
                  "next": next_, "fired": fired}
        return Statement(self._cron_advance, params)

    def cron_wait(self, namespace: str) -> Statement:
        """Seconds until the namespace's next schedule is due (None: none is enabled)."""
        return Statement(self._cron_wait, {"namespace": namespace}, lambda rows: rows[0][0])

    def cron_list(self, namespace: str) -> Statement:
        return Statement(self._cron_list, {"namespace": namespace}, _cron_rows)

    def cron_delete(self, namespace: str, name: str) -> Statement:
        return Statement(self._cron_delete, {"namespace": namespace, "name": name})

    def cron_delete_others(self, namespace: str, prefix: str, keep: Sequence[str]) -> Statement:
        """Delete the namespace's schedules named ``prefix…`` except those in ``keep``."""
        return Statement(self._cron_delete_others, {"namespace": namespace, "prefix": prefix, "keep": list(keep)})

    def cron_try_lead(self, namespace: str) -> Statement:
        """Take the namespace's firing lock on this session if free (True: taken or held)."""
        key = self.names.advisory_key(f"cron:{namespace}")
        return Statement(self._cron_try_lead, {"key": key}, lambda rows: bool(rows[0][0]))

    # --- queue settings ------------------------------------------------------------------------
    def queue_upsert(
        self, name: str, *, concurrency: int | None = None, set_concurrency: bool = False,
        pause: datetime | float | None = None, set_pause: bool = False,
        rate: tuple[int, float] | None = None, set_rate: bool = False,
    ) -> Statement:
        """Create the queue's row or change the settings flagged ``set_*`` (others keep).
        ``pause`` is an end time, seconds from now (database clock), or ``inf``."""
        forever = isinstance(pause, float) and pause == float("inf")
        params = {
            "name": name, "concurrency": concurrency, "set_concurrency": set_concurrency,
            "pause_forever": forever, "set_pause": set_pause,
            "paused_until": pause if isinstance(pause, datetime) else None,
            "pause_for": pause if isinstance(pause, float) and not forever else None,
            "rate_limit": rate[0] if rate else None, "rate_period": rate[1] if rate else None,
            "set_rate": set_rate,
        }
        return Statement(self._queue_upsert, params)

    def queue_delete(self, name: str, purge: bool) -> Statement:
        """Remove the queue's settings (and with ``purge`` its waiting jobs): ``(existed, purged)``."""
        return Statement(self._queue_delete, {"name": name, "purge": purge},
                         lambda rows: (bool(rows[0][0]), rows[0][1]))

    def queue_list(self, names: Sequence[str] | None = None) -> Statement:
        return Statement(self._queue_list, {"names": list(names) if names is not None else None},
                         lambda rows: [QueueSettings(*row) for row in rows])


def _cron_rows(rows: list[tuple]) -> list[Schedule]:
    return [Schedule(row[0], row[1], loads_job_template(row[2]), *row[3:]) for row in rows]
