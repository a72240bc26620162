"""The dashboard's own statements (``sql/dashboard.sql``; what it shares with the CLI is
in :mod:`chancy.store.pg.admin`): the finished-jobs history, the job list, one job, its
canvas, deleting a job, and the metrics windows. Rows come back as JSON-ready dicts
(jsonb columns are read as text and parsed with the plain ``json`` module, so a stored
value is shown exactly as stored, tags and all)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Sequence

from chancy.migrations import Names
from chancy.store.admin import JobSelection
from chancy.store.pg.admin import selection_params
from chancy.store.pg.statements import SqlFile, Statement, Steps, single

JOB_COLUMNS = (
    "id", "queue", "func", "args", "kwargs", "priority", "state", "attempts", "max_attempts",
    "scheduled_at", "expires_at", "created_at", "started_at", "completed_at", "taken_by",
    "unique_key", "limits", "backoff", "meta", "result", "errors",
)
_JSON_COLUMNS = {"args", "kwargs", "limits", "backoff", "meta", "result", "errors"}
#: What a listing shows of each job (arguments only as a short preview).
LIST_COLUMNS = ("id", "queue", "func", "state", "attempts", "max_attempts", "priority",
                "created_at", "started_at", "completed_at", "preview")
CANVAS_COLUMNS = ("id", "queue", "func", "state", "attempts", "max_attempts", "created_at", "started_at",
                  "completed_at", "canvas", "group")

#: A job id as text (what a canvas link must be to be followed).
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: The most jobs a canvas view follows links to.
CANVAS_LIMIT = 500


def job_from_row(row: Sequence[Any]) -> dict[str, Any]:
    job = dict(zip(JOB_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        if job[column] is not None:
            job[column] = json.loads(job[column])
    return job


class DashboardStatements:
    """The dashboard's statements for one table prefix (``PgStore.dashboard``)."""

    def __init__(self, names: Names) -> None:
        self._sql = SqlFile("dashboard.sql", names.fields())
        self._done_channel = names.channel("done")

    def _one(self, name: str, params: dict[str, Any], mapper: Any = lambda rows: rows) -> Steps:
        return single(Statement(self._sql[name], params, mapper))

    def now(self) -> Steps:
        return self._one("now", {}, lambda rows: rows[0][0])

    def finished_buckets(self, start: datetime, bucket: float) -> Steps:
        """``[(bucket start epoch, queue, state, count)]`` of jobs finished since ``start``."""
        return self._one("finished_buckets", {"start": start, "bucket": float(bucket)})

    def list_jobs(self, selection: JobSelection, *, cursor: tuple[datetime, uuid.UUID] | None, newer: bool,
                  limit: int) -> Steps:
        """Selected jobs newest first, ``limit`` at most, after (or, ``newer``, before) ``cursor``."""
        params = {
            **selection_params(selection, [s.value for s in selection.states]),
            "cursor_at": cursor[0] if cursor else None, "cursor_id": cursor[1] if cursor else None,
            "newer": newer, "limit": limit,
        }
        return self._one("list_jobs", params, lambda rows: [dict(zip(LIST_COLUMNS, r, strict=True)) for r in rows])

    def job(self, job_id: uuid.UUID) -> Steps:
        """One job with every column, plus the database's ``now``; None if absent."""

        def shape(rows: list[tuple]) -> dict[str, Any] | None:
            if not rows:
                return None
            job = job_from_row(rows[0][:-1])
            job["now"] = rows[0][-1]
            return job

        return self._one("job", {"id": job_id}, shape)

    def delete(self, job_id: uuid.UUID) -> Steps:
        """Delete a job that is not running: ``(state it had, deleted?)``, None if absent."""
        return self._one("delete", {"id": job_id, "done_channel": self._done_channel},
                         lambda rows: (rows[0][0], rows[0][1]) if rows else None)

    def canvas(self, job_id: uuid.UUID) -> Steps:
        """Every job linked to ``job_id`` through canvas links, in either direction."""

        def shape(rows: list[tuple]) -> list[dict[str, Any]]:
            jobs = [dict(zip(CANVAS_COLUMNS, r, strict=True)) for r in rows]
            for job in jobs:
                canvas = json.loads(job["canvas"]) if job["canvas"] else {}
                job["canvas"] = canvas if isinstance(canvas, dict) else {}
            return jobs

        return self._one("canvas", {"id": job_id, "limit": CANVAS_LIMIT, "uuid_pattern": UUID_PATTERN}, shape)

    def metric_window_end(self, lag: float) -> Steps:
        return self._one("metric_window_end", {"lag": float(lag)}, lambda rows: rows[0][0])

    def metric_totals(self, start: datetime, end: datetime) -> Steps:
        """Per queue and state, jobs finished in ``[start, end)``: count, run and wait
        seconds summed, and how many of them were timed."""
        return self._one("metric_totals", {"start": start, "end": end})

    def metric_buckets(self, start: datetime, end: datetime, bounds: Sequence[float]) -> Steps:
        """Per queue and bucket bound: cumulative counts of run and wait times."""
        return self._one("metric_buckets", {"start": start, "end": end, "bounds": list(bounds)})

    def workers_alive(self) -> Steps:
        return self._one("workers_alive", {}, lambda rows: rows[0][0])
