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
their errbacks (``dropped``) are cancelled. The statements that do it, and the steps
they make, are the store's (:mod:`chancy.store.pg.celery_canvas`); this module decides
when they run.
"""

from __future__ import annotations

from typing import Callable

from chancy.app import Chancy
from chancy.job import JobRecord, JobState
from chancy.queue import Transition
from chancy.store.pg.statements import Steps


def continue_canvas(app: Chancy, record: JobRecord, transition: Transition) -> Callable[[], Steps] | None:
    """The completion hook: what finishing this step does to the rest of its canvas."""
    canvas = record.meta.get("canvas")
    if not canvas:
        return None
    statements = app.store.celery_canvas
    if transition.state is JobState.SUCCEEDED:
        return lambda: statements.on_success(canvas)
    if transition.state in (JobState.FAILED, JobState.CANCELLED):
        task_id = record.meta.get("celery", {}).get("task_id") or str(record.id)
        return lambda: statements.on_failure(canvas, task_id, transition.error)
    return None

