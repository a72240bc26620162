"""Celery's task rate limits on the core's (:mod:`chancy.rate_limits`): a task's
``rate_limit`` (decorator option, class attribute or ``task_annotations``), else
``task_default_rate_limit``; none at all in a worker whose app sets
``worker_disable_rate_limits``. Unlike Celery's, whose limit holds per worker, the
limit holds across every worker of the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chancy import rate_limits
from chancy.errors import ConfigurationError
from chancy.rate_limits import RateLimit

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery


def check(task_name: str, value: Any) -> RateLimit | None:
    """The limit ``value`` stands for; a bad one is an error that names the task."""
    try:
        return rate_limits.parse(value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"task {task_name}: {exc}") from None


def limits_of(celery_app: "Celery") -> dict[str, RateLimit]:
    """The limits a worker of ``celery_app`` enforces, read when the worker is made."""
    conf = celery_app.conf
    if conf.worker_disable_rate_limits:
        return {}
    limits = {name: check(name, conf.task_default_rate_limit if task.rate_limit is None else task.rate_limit)
              for name, task in celery_app.tasks.items()}
    return {name: limit for name, limit in limits.items() if limit is not None}
