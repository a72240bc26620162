"""Per-key concurrency: the rule that names a job's concurrency key from its call.

A task (``@app.task(concurrency_key=..., concurrency=N)``, or a Celery task's
``chancy_concurrency_key``/``chancy_concurrency`` options) gives each job a key; at most
``N`` jobs of one queue with the same key run at once across the cluster, enforced by the
claim (see ``claim_keyed`` in ``chancy/store/pg/sql/jobs.sql`` and docs/scaling.md). The
key is computed at push, so a bad rule fails the push and stores nothing."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Union

from chancy.job import checked_concurrency

#: A key rule: the name of the argument whose value is the key, or a function of the
#: call's arguments returning it.
KeyRule = Union[str, Callable[..., str]]


class ConcurrencyKey:
    """The key rule and limit of one task, checked once, when the task is declared."""

    __slots__ = ("rule", "concurrency", "_signature", "_task")

    def __init__(self, task: str, func: Callable[..., Any], rule: KeyRule, concurrency: int | None) -> None:
        if not (isinstance(rule, str) or callable(rule)):
            raise TypeError(f"concurrency_key of task {task!r} must be an argument name or a function "
                            f"of the arguments, got {type(rule).__name__}")
        self._task = task
        self.rule = rule
        self.concurrency = checked_concurrency("", concurrency)
        self._signature: inspect.Signature | None = None
        if isinstance(rule, str):
            self._signature = inspect.signature(func)
            if rule not in self._signature.parameters:
                raise ValueError(f"concurrency_key {rule!r} of task {task!r} names no argument of it "
                                 f"(it takes {', '.join(self._signature.parameters) or 'none'})")

    def key(self, args: tuple, kwargs: Mapping[str, Any]) -> str:
        """The key of one call: a string (an argument named as the key may be an int),
        else a ``TypeError`` or ``ValueError`` that says which task and why."""
        if self._signature is None:
            try:
                key = self.rule(*args, **kwargs)  # type: ignore[operator]  # callable: checked at init
            except Exception as exc:
                raise ValueError(f"the concurrency_key function of task {self._task!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(key, str):
                raise TypeError(f"the concurrency_key function of task {self._task!r} must return a string, "
                                f"got {type(key).__name__}")
            return key
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self._task!r}: {exc}") from None
        bound.apply_defaults()
        value = bound.arguments[self.rule]  # type: ignore[index]  # a str rule: checked at init
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(f"the concurrency_key argument {self.rule!r} of task {self._task!r} must be a "
                            f"string or an integer, got {type(value).__name__}")
        return str(value)

    def options(self, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The job options of one call: its key and the limit."""
        key = self.key(args, kwargs)
        return {"concurrency_key": key, "concurrency": checked_concurrency(key, self.concurrency)}
