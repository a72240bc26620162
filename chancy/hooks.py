"""The hooks of one app: code that adds follow-up statements to the transaction that
writes a job's outcome (e.g. the Celery layer's chain and chord steps, or the metrics of
finished attempts). They are registered on the app that needs them, so two apps of one
process never run each other's, and the core never learns of a layer by importing it."""

from __future__ import annotations

import dataclasses
import functools
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable, Mapping

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.job import JobRecord
    from chancy.queue import Transition
    from chancy.rate_limits import RateLimit
    from chancy.store.pg.statements import Steps

log = logging.getLogger("chancy.worker")

#: ``hook(app, record, transition) -> (() -> Steps) | None``: called as a worker decides a
#: job's outcome; what it returns makes the statements that run in the outcome's
#: transaction (None: nothing to add).
CompletionHook = Callable[["Chancy", "JobRecord", "Transition"], "Callable[[], Steps] | None"]

#: ``source() -> {task name: RateLimit}``: task limits from outside the core's own
#: declarations (see :meth:`Hooks.on_rate_limits`).
RateLimitSource = Callable[[], "Mapping[str, RateLimit]"]

#: The entry-point group of completion hooks every app runs, before its own: installed
#: packages declare them (Chancy's own: the continuation of link, errback and chain embeds
#: in messages a stock Celery producer sent, :func:`chancy.compat.embed.continue_embed`,
#: which a plain core app's worker must run too, whether or not anything imported the
#: Celery layer).
HOOKS_GROUP = "chancy.completion_hooks"


@functools.cache
def installed_hooks() -> tuple[CompletionHook, ...]:
    """The completion hooks installed packages declare (loaded once, on first use: by a
    worker's first outcome, not at import)."""
    return tuple(entry.load() for entry in sorted(entry_points(group=HOOKS_GROUP), key=lambda e: e.name))


class Hooks:
    """The completion hooks of ``app`` (``app.hooks``), called in the order registered."""

    def __init__(self, app: "Chancy") -> None:
        self._app = app
        self._completion: list[CompletionHook] = []
        self._rate_limits: list[RateLimitSource] = []

    def on_rate_limits(self, source: "RateLimitSource") -> None:
        """Also enforce the task rate limits ``source()`` gives, read when a worker of this
        app is made (the Celery layer's: its tasks' ``rate_limit`` and
        ``task_default_rate_limit``)."""
        self._rate_limits.append(source)

    def rate_limits(self) -> "dict[str, RateLimit]":
        """The task limits the app's sources give, later sources winning."""
        table: dict[str, RateLimit] = {}
        for source in self._rate_limits:
            table.update(source())
        return table

    def on_completion(self, hook: CompletionHook) -> Callable[[], None]:
        """Call ``hook`` with every outcome this app's workers (and recovery) decide;
        registering the same hook again does nothing. Returns the function that removes it."""
        if hook not in self._completion:
            self._completion.append(hook)
        return lambda: self._completion.remove(hook) if hook in self._completion else None

    @property
    def completion(self) -> tuple[CompletionHook, ...]:
        """Every completion hook this app's workers call, in order."""
        return (*installed_hooks(), *self._completion)

    def with_follow_ups(self, record: "JobRecord", transition: "Transition") -> "Transition":
        """``transition`` with the follow-ups the hooks ask for, in hook order. A hook
        that fails is logged and skipped: it must not lose the job's outcome."""
        follow_ups = []
        for hook in self.completion:
            try:
                make_steps = hook(self._app, record, transition)
            except Exception:  # noqa: BLE001
                log.exception("completion hook %r failed for job %s; its follow-up is skipped", hook, record.id)
                continue
            if make_steps is not None:
                follow_ups.append(make_steps)
        if not follow_ups:
            return transition

        def follow_up() -> "Steps":
            for make_steps in follow_ups:
                yield from make_steps()

        return dataclasses.replace(transition, follow_up=follow_up)
