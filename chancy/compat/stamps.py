"""Celery's stamping: ``sig.stamp(visitor, **headers)`` marks every task of a canvas with
headers (kept as ``stamps`` / ``stamped_headers`` on each row), and
``revoke_by_stamped_headers`` finds the tasks carrying a stamp value, in the database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from chancy.job import JobState

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.compat.canvas import Signature

#: States in which a stamped task is revoked; a running one only with ``terminate``.
WAITING = (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING)


def stamp(sig: "Signature", visitor: Any = None, **headers: Any) -> None:
    """Stamp ``sig`` and, for a chain, group or chord, every task in it: ``headers`` plus
    what ``visitor.on_signature(sig)`` returns (Celery's ``StampingVisitor``)."""
    for task in _tasks_of(sig):
        found = dict(headers)
        if visitor is not None:
            found.update(visitor.on_signature(task, **headers) or {})
        found.pop("stamped_headers", None)
        options = task.options
        options["stamped_headers"] = sorted({*(options.get("stamped_headers") or ()), *found})
        options["stamps"] = {**(options.get("stamps") or {}), **found}
        options.update(found)


def _tasks_of(sig: "Signature") -> Iterable["Signature"]:
    kind = sig.get("subtask_type")
    if kind in ("chain", "group"):
        for task in sig.kwargs["tasks"]:
            yield from _tasks_of(task)
    elif kind == "chord":
        yield from _tasks_of(sig.kwargs["header"])
        if sig.kwargs["body"] is not None:
            yield from _tasks_of(sig.kwargs["body"])
    else:
        yield sig


def stamped_task_ids(chancy: "Chancy", headers: Mapping[str, Any], running: bool) -> list[str]:
    """The ids of the waiting (and, with ``running``, running) tasks stamped with one of
    the given values of a header (a value or a list of values per header)."""
    states = [s.value for s in WAITING] + ([JobState.RUNNING.value] if running else [])
    return chancy.store.run_sync(chancy.store.celery_results.stamped(states, headers))
