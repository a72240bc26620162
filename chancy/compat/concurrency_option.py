"""The Celery layer's per-key concurrency: a task option Celery itself ignores.

    @celery_app.task(chancy_concurrency_key="customer_id", chancy_concurrency=1)
    def sync(customer_id, order): ...

``chancy_concurrency_key`` is an argument's name or a function of the call's arguments
returning a string; ``chancy_concurrency`` (default 1) how many jobs of the queue with one
key may run at once, across every worker (see :mod:`chancy.concurrency`). Stock Celery
keeps unknown decorator options as task attributes and never reads these, so a codebase
that declares them still runs under Celery, without the limit."""

from __future__ import annotations

import types
from typing import Any, Mapping

from chancy.concurrency import ConcurrencyKey

KEY_OPTION = "chancy_concurrency_key"
LIMIT_OPTION = "chancy_concurrency"

#: Each task's rule as last checked, by task name (checking inspects its ``run``).
_rules: dict[str, ConcurrencyKey] = {}


def concurrency_options(task: Any, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The job options (``concurrency_key``, ``concurrency``) of one call of ``task``
    (none for a task without the option, or an unknown one sent by name)."""
    rule = _declared(task, KEY_OPTION)
    limit = _declared(task, LIMIT_OPTION)
    if rule is None:
        if limit is not None:
            raise ValueError(f"task {task.name!r}: {LIMIT_OPTION} needs {KEY_OPTION} too")
        return {}
    known = _rules.get(task.name)
    if known is None or known.rule is not rule or known.concurrency != (limit or 1):
        known = _rules[task.name] = ConcurrencyKey(task.name, task.run, rule, limit)
    return known.options(args, kwargs)


def _declared(task: Any, option: str) -> Any:
    """A task option as declared: a function given as one is an attribute of the task's
    class, which Python binds to the task as a method: unbound again here. (Read on every
    ``.delay()``: ``inspect.getattr_static`` cost a tenth of a call's time.)"""
    if task is None:
        return None
    value = getattr(task, option, None)
    return value.__func__ if isinstance(value, types.MethodType) and value.__self__ is task else value
