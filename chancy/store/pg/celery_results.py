"""Finishing the job row of a task whose result Celery ignores (``ignore_result`` /
``task_ignore_result``): the worker stores nothing, yet the row must not stay running
(a worker restart would run the task again), and readers must not take it for a stored
result. The row is finished and marked ``result_ignored``; the result backend reads such
a row as Celery's stores show an ignored result: PENDING, no result."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from chancy import serialization
from chancy.migrations import Names
from chancy.store.pg.statements import ready, Statement


class IgnoredResultSQL:
    def __init__(self, names: Names) -> None:
        f = names.fields()
        # A running row (the Celery consumer acknowledged it and left it for the backend),
        # or one the acknowledgement itself finished as succeeded before the task ran
        # (the message said ignore_result): a failure corrects it to failed.
        self._finish = ready(sql.SQL(
            """
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
            SELECT pg_notify(%(done)s, id::text) FROM finished
            """
        ).format(**f))
        self.done_channel = names.channel("done")

    def finish(self, job_id: Any, error: dict[str, Any] | None) -> Statement:
        """Finish the row as succeeded, or failed with ``error`` (Chancy's error form)."""
        return Statement(self._finish, {"id": job_id, "error": serialization.dumps(error) if error else None,
                                        "done": self.done_channel})
