"""Every statement the dashboard runs, composed like :mod:`chancy.queues.sql`: table names
from the app's prefix, every value a parameter. Rows come back as JSON-ready dicts
(jsonb columns are read as text and parsed with the plain ``json`` module, so a stored
value is shown exactly as stored, tags and all)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Sequence

from psycopg import sql

from chancy.migrations import Names
from chancy.queues.admin_sql import AdminSQL, like_pattern
from chancy.store.pg.statements import Statement

FINISHED = "('succeeded', 'failed', 'cancelled', 'expired')"

JOB_COLUMNS = (
    "id", "queue", "func", "args", "kwargs", "priority", "state", "attempts", "max_attempts",
    "scheduled_at", "expires_at", "created_at", "started_at", "completed_at", "taken_by",
    "unique_key", "limits", "backoff", "meta", "result", "errors",
)
_JSON_COLUMNS = {"args", "kwargs", "limits", "backoff", "meta", "result", "errors"}
_SELECT_JOB = ", ".join(f"{c}::text" if c in _JSON_COLUMNS else c for c in JOB_COLUMNS)
#: What a listing shows of each job (arguments only as a short preview).
LIST_COLUMNS = ("id", "queue", "func", "state", "attempts", "max_attempts", "priority",
                "created_at", "started_at", "completed_at", "preview")

#: A job id as text (what a canvas link must be to be followed).
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: The most jobs a canvas view follows links to.
CANVAS_LIMIT = 500


def job_from_row(row: Sequence[Any]) -> dict[str, Any]:
    job = dict(zip(JOB_COLUMNS, row))
    for column in _JSON_COLUMNS:
        if job[column] is not None:
            job[column] = json.loads(job[column])
    return job


class DashboardSQL:
    """The dashboard's statements for one table prefix, composed once."""

    def __init__(self, names: Names) -> None:
        f = names.fields()
        done = names.channel("done")
        self._admin = AdminSQL(names)
        # Jobs finished since %(start)s per bucket (its start, epoch seconds), queue and
        # state; read through the partial index on completed_at.
        self._finished_buckets = sql.SQL(
            """
            SELECT (floor(extract(epoch FROM completed_at) / %(bucket)s) * %(bucket)s)::float8, queue, state, count(*)
            FROM {jobs}
            WHERE state IN """ + FINISHED + """ AND completed_at >= %(start)s
            GROUP BY 1, 2, 3
            """
        ).format(**f)
        self._now = sql.SQL("SELECT now()")
        self._list = sql.SQL(
            """
            SELECT id, queue, func, state, attempts, max_attempts, priority, created_at,
                   started_at, completed_at, left(args::text || ' ' || kwargs::text, 160)
            FROM {jobs}
            WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
              AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
              AND (%(task)s::text IS NULL OR func ILIKE %(task)s::text)
              AND (%(text)s::text IS NULL OR (args::text || ' ' || kwargs::text) ILIKE %(text)s::text)
              AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
              AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
              AND (%(cursor_at)s::timestamptz IS NULL OR
                   CASE WHEN %(newer)s THEN (created_at, id) > (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid)
                        ELSE (created_at, id) < (%(cursor_at)s::timestamptz, %(cursor_id)s::uuid) END)
            ORDER BY CASE WHEN %(newer)s THEN created_at END ASC, CASE WHEN %(newer)s THEN id END ASC,
                     created_at DESC, id DESC
            LIMIT %(limit)s
            """
        ).format(**f)
        self._job = sql.SQL("SELECT " + _SELECT_JOB + ", now() FROM {jobs} WHERE id = %(id)s").format(**f)
        self._delete = sql.SQL(
            """
            WITH target AS (
                SELECT id, state FROM {jobs} WHERE id = %(id)s FOR UPDATE
            ), gone AS (
                DELETE FROM {jobs} j USING target t WHERE j.id = t.id AND t.state <> 'running'
                RETURNING j.id
            )
            SELECT t.state, EXISTS (SELECT 1 FROM gone),
                   CASE WHEN EXISTS (SELECT 1 FROM gone) THEN pg_notify({done}, t.id::text) END
            FROM target t
            """
        ).format(done=sql.Literal(done), **f)
        # Links are followed only where they are arrays of job ids: meta is whatever the
        # pusher wrote, and a cast of anything else to uuid would fail the whole page.
        links = " || ".join(
            f"CASE jsonb_typeof(src.meta->'canvas'->'{key}') WHEN 'array' THEN src.meta->'canvas'->'{key}' "
            "ELSE '[]'::jsonb END"
            for key in ("after", "then", "errbacks", "downstream", "dropped")
        )
        self._canvas = sql.SQL(
            """
            WITH RECURSIVE linked(id) AS (
                SELECT id FROM {jobs} WHERE id = %(id)s
                UNION
                SELECT j.id FROM linked l
                JOIN {jobs} src ON src.id = l.id
                CROSS JOIN LATERAL jsonb_array_elements_text(""" + links + """) AS n(id)
                JOIN {jobs} j ON j.id = CASE WHEN n.id ~* %(uuid_pattern)s THEN n.id::uuid END
            )
            SELECT j.id, j.queue, j.func, j.state, j.attempts, j.max_attempts, j.created_at,
                   j.started_at, j.completed_at, (j.meta->'canvas')::text, (j.meta->'celery'->>'group')
            FROM {jobs} j WHERE j.id IN (SELECT id FROM linked LIMIT %(limit)s)
            """
        ).format(**f)
        self._metric_window = sql.SQL("SELECT now() - make_interval(secs => %(lag)s)")
        finished_between = (
            " FROM {jobs} WHERE state IN " + FINISHED
            + " AND completed_at >= %(start)s AND completed_at < %(end)s"
        )
        self._metric_totals = sql.SQL(
            "SELECT queue, state, count(*), "
            "coalesce(sum(extract(epoch FROM completed_at - started_at)) "
            "FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL), 0)::float8, "
            "coalesce(sum(extract(epoch FROM started_at - scheduled_at)) "
            "FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL), 0)::float8, "
            "count(*) FILTER (WHERE state IN ('succeeded', 'failed') AND started_at IS NOT NULL)"
            + finished_between + " GROUP BY queue, state"
        ).format(**f)
        self._metric_buckets = sql.SQL(
            """
            WITH timed AS (
                SELECT queue, extract(epoch FROM completed_at - started_at) AS run,
                       extract(epoch FROM started_at - scheduled_at) AS wait
            """ + finished_between + """
                  AND state IN ('succeeded', 'failed') AND started_at IS NOT NULL
            )
            SELECT t.queue, b.le, count(*) FILTER (WHERE t.run <= b.le), count(*) FILTER (WHERE t.wait <= b.le)
            FROM timed t CROSS JOIN unnest(%(bounds)s::float8[]) AS b(le)
            GROUP BY t.queue, b.le
            """
        ).format(**f)
        self._workers_alive = sql.SQL("SELECT count(*) FROM {workers} WHERE expires_at > now()").format(**f)

    # --- overview --------------------------------------------------------------------------
    def live_counts(self) -> Statement:
        """``{queue: {state: count}}`` of live jobs and ``{queue: oldest waiting seconds}``
        (the statement ``chancy status`` counts with too)."""
        return self._admin.live_counts()

    def finished_buckets(self, start: datetime, bucket: float) -> Statement:
        """``[(bucket start epoch, queue, state, count)]`` of jobs finished since ``start``."""
        return Statement(self._finished_buckets, {"start": start, "bucket": float(bucket)})

    def now(self) -> Statement:
        return Statement(self._now, {}, lambda rows: rows[0][0])

    # --- jobs --------------------------------------------------------------------------------
    def list_jobs(
        self, *, states: Sequence[str] | None, queue: str | None, task: str | None, text: str | None,
        since: datetime | None, until: datetime | None, cursor: tuple[datetime, uuid.UUID] | None,
        newer: bool, limit: int,
    ) -> Statement:
        """Jobs newest first, ``limit`` at most, after (or, ``newer``, before) ``cursor``."""
        params = {
            "states": list(states) if states else None, "queue": queue,
            "task": like_pattern(task) if task else None, "text": like_pattern(text) if text else None,
            "since": since, "until": until, "cursor_at": cursor[0] if cursor else None,
            "cursor_id": cursor[1] if cursor else None, "newer": newer, "limit": limit,
        }
        return Statement(self._list, params, lambda rows: [dict(zip(LIST_COLUMNS, r)) for r in rows])

    def job(self, job_id: uuid.UUID) -> Statement:
        """One job with every column, plus the database's ``now``; None if absent."""

        def shape(rows: list[tuple]) -> dict[str, Any] | None:
            if not rows:
                return None
            job = job_from_row(rows[0][:-1])
            job["now"] = rows[0][-1]
            return job

        return Statement(self._job, {"id": job_id}, shape)

    def delete(self, job_id: uuid.UUID) -> Statement:
        """Delete a job that is not running: ``(state it had, deleted?)``, None if absent."""
        return Statement(self._delete, {"id": job_id}, lambda rows: (rows[0][0], rows[0][1]) if rows else None)

    def canvas(self, job_id: uuid.UUID) -> Statement:
        """Every job linked to ``job_id`` through canvas links, in either direction."""
        keys = ("id", "queue", "func", "state", "attempts", "max_attempts", "created_at", "started_at",
                "completed_at", "canvas", "group")

        def shape(rows: list[tuple]) -> list[dict[str, Any]]:
            jobs = [dict(zip(keys, r)) for r in rows]
            for job in jobs:
                canvas = json.loads(job["canvas"]) if job["canvas"] else {}
                job["canvas"] = canvas if isinstance(canvas, dict) else {}
            return jobs

        return Statement(self._canvas, {"id": job_id, "limit": CANVAS_LIMIT, "uuid_pattern": UUID_PATTERN}, shape)

    # --- workers -------------------------------------------------------------------------------
    def workers(self) -> Statement:
        return self._admin.workers()

    def table_health(self) -> Statement:
        return self._admin.table_health()

    # --- metrics -------------------------------------------------------------------------------
    def metric_window_end(self, lag: float) -> Statement:
        return Statement(self._metric_window, {"lag": float(lag)}, lambda rows: rows[0][0])

    def metric_totals(self, start: datetime, end: datetime) -> Statement:
        """Per queue and state, jobs finished in ``[start, end)``: count, run and wait
        seconds summed, and how many of them were timed."""
        return Statement(self._metric_totals, {"start": start, "end": end})

    def metric_buckets(self, start: datetime, end: datetime, bounds: Sequence[float]) -> Statement:
        """Per queue and bucket bound: cumulative counts of run and wait times."""
        return Statement(self._metric_buckets, {"start": start, "end": end, "bounds": list(bounds)})

    def workers_alive(self) -> Statement:
        return Statement(self._workers_alive, {}, lambda rows: rows[0][0])
