"""Advancing a canvas (chain, group, chord, link, link_error) in the transaction that
completes a step, so a crash neither loses nor repeats a step.

Every job of a canvas is inserted when the canvas is applied. Jobs that must wait are
*parked*: state ``scheduled`` with a far-future ``scheduled_at`` (never claimed) and
``meta["canvas"]`` saying what they wait for::

    {"after": [ids], "remaining": n, "pass_result": bool, "join": bool, "delay": seconds}

A job others wait on carries what its completion does::

    {"then": [ids], "errbacks": [ids], "downstream": [ids], "dropped": [ids]}

On success each ``then`` job's counter drops by one (one UPDATE: the row lock serialises
concurrent completions, so a chord body is released exactly once), and a job whose
counter reaches zero becomes pending with the predecessor's result (a chord body: the
list of its header's results) in front of its arguments. Unused errbacks are cancelled.
On failure the errbacks are released with the failed task id as first argument, the
``downstream`` jobs fail with the same error (as Celery marks the rest of a chain), and
their errbacks (``dropped``) are cancelled.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from psycopg import sql

from chancy import serialization
from chancy.app import Chancy
from chancy.job import JobRecord, JobState
from chancy.migrations import Names
from chancy.queue import Transition
from chancy.store.pg.statements import Statement, Steps
from chancy.worker import completion_hooks

#: ``scheduled_at`` of a parked job: never due, so never claimed until released.
PARKED_AT = datetime(9999, 12, 31, tzinfo=timezone.utc)
_PARKED = "state = 'scheduled' AND meta->'canvas' ? 'remaining'"


class ContinuationSQL:
    def __init__(self, names: Names) -> None:
        f = names.fields()
        self.pushed_channel = names.channel("pushed")
        self.done_channel = names.channel("done")
        self._park_replaced = sql.SQL(
            "UPDATE {jobs} SET state = 'scheduled', scheduled_at = %(parked_at)s, meta = %(meta)s::jsonb "
            "WHERE id = %(id)s AND state = 'running' AND taken_by = %(worker)s AND attempts = %(attempt)s "
            "RETURNING id"
        ).format(**f)
        self._countdown = sql.SQL(
            "UPDATE {jobs} SET meta = jsonb_set(meta, '{{canvas,remaining}}', "
            "to_jsonb((meta->'canvas'->>'remaining')::int - 1)) "
            "WHERE id = ANY(%(ids)s) AND " + _PARKED + " AND (meta->'canvas'->>'remaining')::int > 0 "
            "RETURNING id, (meta->'canvas'->>'remaining')::int"
        ).format(**f)
        # A separate statement from the countdown, so that its snapshot sees the results
        # of every predecessor (committed before their own countdown let ours through).
        self._release = sql.SQL(
            """
            WITH released AS (
                UPDATE {jobs} j SET
                    state = CASE WHEN (j.meta->'canvas'->>'delay')::float8 > 0 THEN 'scheduled' ELSE 'pending' END,
                    scheduled_at = now() + make_interval(secs => coalesce((j.meta->'canvas'->>'delay')::float8, 0)),
                    args = CASE WHEN (j.meta->'canvas'->>'pass_result')::boolean THEN
                        jsonb_build_array(CASE WHEN (j.meta->'canvas'->>'join')::boolean THEN
                            (SELECT coalesce(jsonb_agg(p.result ORDER BY a.ord), '[]'::jsonb)
                             FROM jsonb_array_elements_text(j.meta->'canvas'->'after')
                                  WITH ORDINALITY AS a(id, ord)
                             JOIN {jobs} p ON p.id = a.id::uuid)
                        ELSE (SELECT p.result FROM {jobs} p
                              WHERE p.id = (j.meta->'canvas'->'after'->>0)::uuid) END) || j.args
                    ELSE j.args END
                WHERE j.id = ANY(%(ids)s) AND j.state = 'scheduled'
                RETURNING j.queue
            )
            SELECT pg_notify(%(channel)s, queue) FROM released
            """
        ).format(**f)
        self._release_errbacks = sql.SQL(
            """
            WITH released AS (
                UPDATE {jobs} SET state = 'pending', scheduled_at = now(),
                    args = jsonb_build_array(%(task_id)s::text) || args
                WHERE id = ANY(%(ids)s) AND """ + _PARKED + """
                RETURNING queue
            )
            SELECT pg_notify(%(channel)s, queue) FROM released
            """
        ).format(**f)
        self._finish = sql.SQL(
            """
            WITH finished AS (
                UPDATE {jobs} SET state = %(state)s, completed_at = now(),
                    errors = CASE WHEN %(error)s::jsonb IS NULL THEN errors
                                  ELSE errors || jsonb_build_array(%(error)s::jsonb) END
                WHERE id = ANY(%(ids)s) AND """ + _PARKED + """
                RETURNING id
            )
            SELECT pg_notify(%(channel)s, id::text) FROM finished
            """
        ).format(**f)

    def park_replaced(self, record: JobRecord, canvas: dict[str, Any]) -> Statement:
        """Park a running job whose task replaced itself: it waits, with ``canvas``, for its
        replacement, guarded by the attempt that replaced it (a late writer changes nothing)."""
        meta = {**record.meta, "canvas": canvas, "celery": {**record.meta.get("celery", {}), "replaced": True}}
        return Statement(self._park_replaced, {"id": record.id, "worker": record.taken_by,
                                               "attempt": record.attempts, "parked_at": PARKED_AT,
                                               "meta": serialization.dumps(meta)},
                         lambda rows: bool(rows))

    def countdown(self, ids: list[str]) -> Statement:
        return Statement(self._countdown, {"ids": [uuid.UUID(i) for i in ids]},
                         lambda rows: [row[0] for row in rows if row[1] == 0])

    def release(self, ids: list[uuid.UUID]) -> Statement:
        return Statement(self._release, {"ids": ids, "channel": self.pushed_channel})

    def release_errbacks(self, ids: list[str], task_id: str) -> Statement:
        return Statement(self._release_errbacks, {"ids": [uuid.UUID(i) for i in ids], "task_id": task_id,
                                                  "channel": self.pushed_channel})

    def finish(self, ids: list[str], state: JobState, error: dict[str, Any] | None) -> Statement:
        return Statement(self._finish, {"ids": [uuid.UUID(i) for i in ids], "state": state.value,
                                        "error": serialization.dumps(error) if error else None,
                                        "channel": self.done_channel})


@functools.lru_cache(maxsize=None)
def statements(prefix: str) -> ContinuationSQL:
    return ContinuationSQL(Names(prefix))


def on_success(sql_: ContinuationSQL, canvas: dict[str, Any]) -> Steps:
    if canvas.get("then"):
        ready = yield sql_.countdown(canvas["then"])
        if ready:
            yield sql_.release(ready)
    if canvas.get("errbacks"):
        yield sql_.finish(canvas["errbacks"], JobState.CANCELLED, None)


def on_failure(sql_: ContinuationSQL, canvas: dict[str, Any], task_id: str, error: dict[str, Any] | None) -> Steps:
    if canvas.get("errbacks"):
        yield sql_.release_errbacks(canvas["errbacks"], task_id)
    if canvas.get("downstream"):
        yield sql_.finish(canvas["downstream"], JobState.FAILED, error)
    if canvas.get("dropped"):
        yield sql_.finish(canvas["dropped"], JobState.CANCELLED, None)


def on_revoke(sql_: ContinuationSQL, canvas: dict[str, Any]) -> Steps:
    """A revoked step's dependants will never run: revoke them too (and every errback)."""
    for key in ("downstream", "dropped", "errbacks"):
        if canvas.get(key):
            yield sql_.finish(canvas[key], JobState.CANCELLED, None)


def continue_canvas(app: Chancy, record: JobRecord, transition: Transition) -> Callable[[], Steps] | None:
    """The completion hook: what finishing this step does to the rest of its canvas."""
    canvas = record.meta.get("canvas")
    if not canvas:
        return None
    sql_ = statements(app.names.prefix)
    if transition.state is JobState.SUCCEEDED:
        return lambda: on_success(sql_, canvas)
    if transition.state in (JobState.FAILED, JobState.CANCELLED):
        task_id = record.meta.get("celery", {}).get("task_id") or str(record.id)
        return lambda: on_failure(sql_, canvas, task_id, transition.error)
    return None


def install() -> None:
    if continue_canvas not in completion_hooks:
        completion_hooks.append(continue_canvas)
