"""Running a Celery app's tasks on the Chancy worker: ``worker_app`` (what ``chancy worker
-A proj`` calls for a Celery-style app) and the plugin that sends Celery's worker signals."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from chancy import stdio
from chancy.app import Chancy
import chancy.compat.signals as signals
from chancy.compat.beat import schedule_namespace, sync_schedule
from chancy.errors import ConfigurationError
from chancy.executors.process import NO_CHILD_LIMITS, ChildLimits
from chancy.plugin import Plugin, WorkerContext
from chancy.plugins.cron import Cron
from chancy.plugins.leadership import Leadership
from chancy.plugins.recovery import Recovery
from chancy.queues.pg import Queue

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery

log = logging.getLogger("chancy.compat.worker")

#: Celery's ``-P`` pool names, as Chancy executors.
POOLS = {"prefork": "process", "process": "process", "threads": "thread", "thread": "thread",
         "solo": "asyncio", "asyncio": "asyncio"}


class CeleryWorker(Plugin):
    """Celery's worker-side duties on a Chancy worker: sends ``worker_init`` /
    ``worker_ready`` at start and ``worker_shutting_down`` / ``worker_shutdown`` at stop,
    and writes the app's beat schedule to the database (its namespace's cron firer fires it)."""

    def __init__(self, celery_app: "Celery") -> None:
        super().__init__()
        self.celery_app = celery_app

    def bind(self, app: Chancy) -> None:
        """The core app's schedules are the Celery app's: its namespace, set before
        anything lists, syncs or fires them."""
        super().bind(app)
        app.namespace = schedule_namespace(self.celery_app)

    async def run(self, worker: WorkerContext) -> Any:
        signals.worker_init.send(sender=worker)
        try:  # an empty beat_schedule too: it unschedules the app's old entries
            await asyncio.to_thread(sync_schedule, self.celery_app)
        except Exception:  # noqa: BLE001 - a bad entry must not stop the worker's tasks
            log.exception("the beat schedule could not be written; periodic tasks keep their old timing")
        signals.worker_ready.send(sender=worker)
        try:
            await asyncio.Event().wait()
        finally:
            signals.worker_shutting_down.send(sender=worker.worker_id, sig="TERM", how="warm", exitcode=0)
            signals.worker_shutdown.send(sender=worker)


def cluster_plugins(celery_app: "Celery") -> list[Plugin]:
    """The plugins a Celery app's core app runs: leadership, recovery of jobs of dead
    workers, the cron that runs beat, and the Celery worker hooks."""
    return [Leadership(), Recovery(), Cron(), CeleryWorker(celery_app)]


def _executor(pool: str | None) -> str | None:
    if pool is None:
        return None
    try:
        return POOLS[pool]
    except KeyError:
        raise ConfigurationError(f"-P {pool!r} is not available; choose one of {sorted(POOLS)} "
                                 "(eventlet and gevent pools are not supported)") from None


def child_limits(celery_app: "Celery", executor: str, given: ChildLimits = NO_CHILD_LIMITS) -> ChildLimits:
    """The per-child limits of a worker: ``given`` (the worker's flags) over the app's
    ``worker_max_tasks_per_child`` / ``worker_max_memory_per_child``. Only process-pool
    children can be replaced: for another pool, given limits are an error and configured
    ones are ignored with a warning (Celery ignores them there too)."""
    conf = celery_app.conf
    configured = ChildLimits(conf.worker_max_tasks_per_child, conf.worker_max_memory_per_child)
    if executor == "process":
        return given.or_else(configured)
    if given:
        raise ConfigurationError(f"max tasks/memory per child apply to the process pool, not the {executor} pool")
    if configured:
        warnings.warn(f"worker_max_tasks_per_child / worker_max_memory_per_child apply to the process pool "
                      f"(-P process / prefork) only; the {executor} pool ignores them", UserWarning, stacklevel=3)
    return NO_CHILD_LIMITS


def default_concurrency() -> int:
    """Celery's default ``-c``: the number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def redirect_level(celery_app: "Celery") -> int | None:
    """The level at which a worker logs its tasks' ``print()`` lines
    (``worker_redirect_stdouts_level``), or None when ``worker_redirect_stdouts`` is off."""
    conf = celery_app.conf
    return stdio.redirect_level(conf.worker_redirect_stdouts_level) if conf.worker_redirect_stdouts else None


def worker_app(celery_app: "Celery", queues: Sequence[str] | None = None, concurrency: int | None = None,
               pool: str | None = None, limits: ChildLimits = NO_CHILD_LIMITS) -> Chancy:
    """The ready :class:`Chancy` to run ``celery_app``'s tasks: the named queues (declared
    on the fly, like Celery's ``-Q``; default: ``task_default_queue`` and ``task_queues``),
    each with ``concurrency`` (default ``worker_concurrency``, else the CPU count, as Celery's
    ``-c``; ``solo``: 1), the executor of
    ``pool`` (Celery names accepted; default ``worker_pool``) and, for the process pool,
    the per-child ``limits`` (default: the app's ``worker_max_*_per_child``)."""
    conf = celery_app.conf
    chancy = celery_app.chancy
    names = list(queues or celery_app.declared_queues())
    concurrency = concurrency or conf.worker_concurrency or default_concurrency()
    executor = _executor(pool or conf.worker_pool) or "process"
    if executor == "asyncio" and (pool or conf.worker_pool) == "solo":
        concurrency = 1
    limits = child_limits(celery_app, executor, limits)
    for name in names:
        queue = Queue(name, concurrency=concurrency, executor=limits.executor if limits else executor)
        queue.bind(chancy)
        chancy.queues[name] = queue
    return chancy
