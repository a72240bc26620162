"""Periodic jobs: cron expressions (``croniter``) and fixed intervals, stored in the
database and fired by one process per namespace (a worker with the plugin, or ``chancy
beat``). The schedules live in the store the app keeps its jobs in
(:class:`~chancy.store.schedules.ScheduleStore`: Postgres, or memory inside
:func:`chancy.testing.in_memory`, where a test fires them without a database); their rules
are :mod:`chancy.store.schedule_rules`.

**Namespaces.** A schedule belongs to its app's namespace (``Chancy(namespace=…)``, a
Celery app's main name; see :mod:`chancy.namespaces`): an app schedules, lists, replaces
and fires only its own, so apps sharing a database never fire, change or delete each
other's. Within a namespace one process fires at a time: whoever holds the namespace's
firing seat, in Postgres an advisory lock on its firing connection (a worker of another
app never competes, and the cluster leader of another app cannot starve this one).

**Exactly once per tick.** Whoever fires locks the due schedule row, pushes the firing's
job and advances ``next_fire_at`` in **one transaction**, and the advance only applies if
``next_fire_at`` is still what it read, so a second firer (the lock is an efficiency
measure, not the guarantee) either skips the locked row or finds it advanced. The firing's
job carries ``unique_key = "cron:<name>:<tick ISO>"`` (``…@<namespace>`` outside the
default namespace, whose keys keep their old form), visible to anyone inspecting jobs.

**Missed ticks collapse**, as Celery beat's do: when the firer comes back after downtime,
a schedule that missed several ticks fires once, for the latest of them, and then keeps
its grid. ``catch_up`` (default 0) opts into firing each tick at most that old instead.

The API (each also ``…_sync``)::

    await Cron.schedule(app, "report", Job("proj.tasks.report"), cron="0 7 * * mon-fri",
                        timezone="Europe/Paris")
    await Cron.schedule(app, "ping", Job("proj.tasks.ping"), every=30, expires_in=25)
    await Cron.replace(app, [Spec("ping", Job("proj.tasks.ping"), every=30)], prefix="")
    await Cron.unschedule(app, "ping")
    await Cron.schedules(app)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Iterable

from chancy.errors import ConfigurationError
from chancy.job import Job
from chancy.plugin import Plugin, WorkerContext
from chancy.store.of_app import cluster_of
from chancy.store.schedules import Firing, Schedule, ScheduleStore, Spec

if TYPE_CHECKING:
    from chancy.app import Chancy

__all__ = ["Cron", "Schedule", "Spec"]

log = logging.getLogger("chancy.cron")

#: A firing pass that takes longer than this is abandoned (its transaction rolls back) and
#: the firing seat, with its lock, replaced: its link probably died silently.
PASS_TIMEOUT = 30.0


def _schedules(app: "Chancy") -> ScheduleStore:
    """The schedules of the store the app keeps its jobs in (Postgres, or memory)."""
    return cluster_of(app).schedules


class Cron(Plugin):
    """Fires the due schedules of its app's namespace while it holds the namespace's
    firing seat; ``interval`` bounds how long a new or changed schedule waits to be
    noticed and how soon a standby takes over. Due ticks are otherwise fired on time."""

    def __init__(self, interval: float = 1.0, catch_up: timedelta | float = timedelta(0)) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Cron interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.catch_up = catch_up if isinstance(catch_up, timedelta) else timedelta(seconds=catch_up)
        if self.catch_up.total_seconds() < 0:
            raise ConfigurationError(f"Cron catch_up must not be negative, got {catch_up!r}")

    async def run(self, worker: WorkerContext) -> None:
        await self.fire_forever(worker.app)

    async def fire_forever(self, app: "Chancy") -> None:
        """Fire the namespace's due schedules until cancelled, whenever this process holds
        the namespace's firing seat (in Postgres a lock on a connection of its own, so it
        ends with it: a killed firer is replaced within ``interval``)."""
        while True:
            firing: Firing | None = None
            try:
                firing = await _schedules(app).firing(app.namespace)
                while not await firing.try_lead():
                    await asyncio.sleep(self.interval)
                log.info("firing the schedules of namespace %r", app.namespace)
                while True:
                    async with asyncio.timeout(PASS_TIMEOUT):
                        until_next = await self._fire_pass(firing)
                    await asyncio.sleep(until_next)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a pass is one atomic step: nothing was half-done
                log.warning("firing the schedules of namespace %r failed (%s)", app.namespace, exc)
            finally:
                if firing is not None:
                    await firing.close()  # the seat goes with it
            await asyncio.sleep(self.interval)

    async def _fire_pass(self, firing: Firing) -> float:
        """Fire what is due; the seconds to wait before the next pass."""
        await firing.fire_due(self.catch_up)
        until_next = await firing.until_next()
        return self.interval if until_next is None else min(self.interval, max(until_next, 0.005))

    # --- the API: the app's namespace only ------------------------------------------------------
    @staticmethod
    async def schedule(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                       every: float | timedelta | None = None, timezone: str = "UTC",
                       expires_in: float | None = None, enabled: bool = True) -> None:
        """Create or replace schedule ``name`` (see :class:`Spec`). Replacing a schedule
        with the same timing keeps its next tick."""
        spec = Spec(name, job, cron, every, timezone, expires_in, enabled)
        await _schedules(app).upsert(app.namespace, [spec])

    @staticmethod
    def schedule_sync(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                      every: float | timedelta | None = None, timezone: str = "UTC",
                      expires_in: float | None = None, enabled: bool = True) -> None:
        spec = Spec(name, job, cron, every, timezone, expires_in, enabled)
        _schedules(app).upsert_sync(app.namespace, [spec])

    @staticmethod
    async def replace(app: "Chancy", specs: Iterable[Spec], *, prefix: str = "") -> list[str]:
        """Make the app's schedules named ``prefix…`` exactly ``specs``, in one
        transaction: the others of them are deleted (all of them when ``specs`` is empty),
        unchanged timings keep their next tick. Returns the names."""
        return await _schedules(app).replace(app.namespace, prefix, list(specs))

    @staticmethod
    def replace_sync(app: "Chancy", specs: Iterable[Spec], *, prefix: str = "") -> list[str]:
        return _schedules(app).replace_sync(app.namespace, prefix, list(specs))

    @staticmethod
    async def unschedule(app: "Chancy", name: str) -> None:
        await _schedules(app).delete(app.namespace, name)

    @staticmethod
    def unschedule_sync(app: "Chancy", name: str) -> None:
        _schedules(app).delete_sync(app.namespace, name)

    @staticmethod
    async def schedules(app: "Chancy") -> list[Schedule]:
        return await _schedules(app).list(app.namespace)

    @staticmethod
    def schedules_sync(app: "Chancy") -> list[Schedule]:
        return _schedules(app).list_sync(app.namespace)
