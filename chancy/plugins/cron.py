"""Periodic jobs: cron expressions (``croniter``) and fixed intervals, stored in the
database and fired by one process per namespace (a worker with the plugin, or ``chancy
beat``).

**Namespaces.** A schedule belongs to its app's namespace (``Chancy(namespace=…)``, a
Celery app's main name; see :mod:`chancy.namespaces`): an app schedules, lists, replaces
and fires only its own, so apps sharing a database never fire, change or delete each
other's. Within a namespace one process fires at a time: whoever holds the namespace's
advisory lock on its firing connection (a worker of another app never competes, and the
cluster leader of another app cannot starve this one).

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
import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable, Sequence, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from chancy.errors import ConfigurationError
from chancy.job import Job
from chancy.namespaces import DEFAULT_NAMESPACE
from chancy.plugin import Plugin, WorkerContext
from chancy.store.pg.atomic import run_atomically, run_atomically_sync
from chancy.store.pg.jobs import JobSQL, push_steps
from chancy.store.pg.schedules import Schedule, ScheduleSQL, dumps_job_template
from chancy.store.pg.session import Session
from chancy.store.pg.statements import single, Steps

if TYPE_CHECKING:
    from chancy.app import Chancy

__all__ = ["Cron", "Schedule", "Spec"]

log = logging.getLogger("chancy.cron")

_UTC = timezone.utc

#: At most this many late ticks of one schedule are pushed per pass.
MAX_FIRINGS_PER_PASS = 100

#: A firing pass that takes longer than this is abandoned (its transaction rolls back) and
#: the firing connection, with its lock, replaced: its link probably died silently.
PASS_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Spec:
    """One schedule to store: push ``job`` on ``cron`` (5 fields, or 6 with seconds last) in
    ``timezone``, or ``every`` seconds; each firing expires ``expires_in`` seconds after
    its tick if not started by then."""

    name: str
    job: Job
    cron: str | None = None
    every: float | timedelta | None = None
    timezone: str = "UTC"
    expires_in: float | None = None
    enabled: bool = True


class Cron(Plugin):
    """Fires the due schedules of its app's namespace while it holds the namespace's
    firing lock; ``interval`` bounds how long a new or changed schedule waits to be
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
        the namespace's lock (on a connection of its own, so the lock ends with it: a killed
        firer is replaced within ``interval``)."""
        statements = app.store.schedules
        while True:
            session: Session | None = None
            try:
                session = await Session.open(app.store)
                while not await session.run(single(statements.try_lead(app.namespace))):
                    await asyncio.sleep(self.interval)
                log.info("firing the schedules of namespace %r", app.namespace)
                while True:
                    async with asyncio.timeout(PASS_TIMEOUT):
                        until_next = await self._fire_pass(session, app)
                    await asyncio.sleep(until_next)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a pass is one transaction: nothing was half-done
                log.warning("firing the schedules of namespace %r failed (%s)", app.namespace, exc)
            finally:
                if session is not None:
                    await session.close()  # the lock goes with it
            await asyncio.sleep(self.interval)

    async def _fire_pass(self, session: Session, app: "Chancy") -> float:
        """Fire what is due; the seconds to wait before the next pass."""
        statements = app.store.schedules
        await session.run_atomically(fire_due_steps(statements, app.store.jobs, self.catch_up, app.namespace))
        until_next = await session.run(single(statements.wait(app.namespace)))
        return self.interval if until_next is None else min(self.interval, max(until_next, 0.005))

    # --- the API: the app's namespace only ------------------------------------------------------
    @staticmethod
    async def schedule(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                       every: float | timedelta | None = None, timezone: str = "UTC",
                       expires_in: float | None = None, enabled: bool = True) -> None:
        """Create or replace schedule ``name`` (see :class:`Spec`). Replacing a schedule
        with the same timing keeps its next tick."""
        spec = Spec(name, job, cron, every, timezone, expires_in, enabled)
        await app.store.run(upsert_steps(app.store.schedules, app.namespace, [spec]))

    @staticmethod
    def schedule_sync(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                      every: float | timedelta | None = None, timezone: str = "UTC",
                      expires_in: float | None = None, enabled: bool = True) -> None:
        spec = Spec(name, job, cron, every, timezone, expires_in, enabled)
        app.store.run_sync(upsert_steps(app.store.schedules, app.namespace, [spec]))

    @staticmethod
    async def replace(app: "Chancy", specs: Iterable[Spec], *, prefix: str = "") -> list[str]:
        """Make the app's schedules named ``prefix…`` exactly ``specs``, in one
        transaction: the others of them are deleted (all of them when ``specs`` is empty),
        unchanged timings keep their next tick. Returns the names."""
        steps = replace_steps(app.store.schedules, app.namespace, prefix, list(specs))
        return await run_atomically(app.store, steps)

    @staticmethod
    def replace_sync(app: "Chancy", specs: Iterable[Spec], *, prefix: str = "") -> list[str]:
        steps = replace_steps(app.store.schedules, app.namespace, prefix, list(specs))
        return run_atomically_sync(app.store, steps)

    @staticmethod
    async def unschedule(app: "Chancy", name: str) -> None:
        await app.store.run(single(app.store.schedules.delete(app.namespace, name)))

    @staticmethod
    def unschedule_sync(app: "Chancy", name: str) -> None:
        app.store.run_sync(single(app.store.schedules.delete(app.namespace, name)))

    @staticmethod
    async def schedules(app: "Chancy") -> list[Schedule]:
        return await app.store.run(single(app.store.schedules.list(app.namespace)))

    @staticmethod
    def schedules_sync(app: "Chancy") -> list[Schedule]:
        return app.store.run_sync(single(app.store.schedules.list(app.namespace)))


# --- operations (driven sync or async) --------------------------------------------------------
class _Timing(TypedDict):
    """A schedule's timing as stored."""

    cron: str | None
    every: float | None
    timezone: str


def _check(spec: Spec) -> _Timing:
    """The spec's timing as stored (``cron``, ``every``, ``timezone``), or a clear error."""
    if not isinstance(spec.name, str) or not spec.name:
        raise ConfigurationError(f"A schedule needs a non-empty name, got {spec.name!r}")
    job = spec.job
    if not isinstance(job, Job):
        raise ConfigurationError(f"Cron.schedule takes a chancy.Job, got {type(job).__name__}")
    for field in ("id", "unique_key", "scheduled_at", "expires_at"):
        if getattr(job, field) is not None:
            raise ConfigurationError(
                f"A scheduled job must not set {field}: each firing gets its own "
                "(use expires_in= for an expiry relative to the tick)")
    cron, every = spec.cron, spec.every
    if (cron is None) == (every is None):
        raise ConfigurationError("Give exactly one of cron= (an expression) or every= (seconds)")
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0):
        raise ConfigurationError(f"every must be a positive number of seconds or a timedelta, got {every!r}")
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron)):
        raise ConfigurationError(f"{cron!r} is not a valid cron expression (e.g. '*/5 * * * *')")
    _zone(spec.timezone)
    if spec.expires_in is not None and (not isinstance(spec.expires_in, (int, float)) or spec.expires_in <= 0):
        raise ConfigurationError(f"expires_in must be a positive number of seconds, got {spec.expires_in!r}")
    return _Timing(cron=cron, every=float(seconds) if seconds is not None else None, timezone=spec.timezone)


def upsert_steps(statements: ScheduleSQL, namespace: str, specs: Sequence[Spec]) -> Steps:
    """Store each spec in ``namespace``; all are checked before any is written."""
    timings = [_check(spec) for spec in specs]
    if not specs:
        return
    now = yield statements.now
    for spec, timing in zip(specs, timings, strict=True):
        yield statements.upsert({
            "namespace": namespace, "name": spec.name, "job": dumps_job_template(spec.job), **timing,
            "expires_in": spec.expires_in, "next_fire_at": _next_after(now, **timing), "enabled": spec.enabled,
        })


def replace_steps(statements: ScheduleSQL, namespace: str, prefix: str, specs: Sequence[Spec]) -> Steps:
    """Make the namespace's schedules named ``prefix…`` exactly ``specs``; run in one
    transaction. Returns their names."""
    names = [spec.name for spec in specs]
    outside = [name for name in names if not isinstance(name, str) or not name.startswith(prefix)]
    if outside:
        raise ConfigurationError(f"Schedules {outside!r} are not named {prefix!r}…, the set being replaced")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"Schedule names must be unique, got {sorted(names)!r}")
    yield statements.adopt(namespace, names)
    yield from upsert_steps(statements, namespace, specs)
    yield statements.delete_others(namespace, prefix, names)
    return names


def fire_due_steps(statements: ScheduleSQL, job_sql: JobSQL, catch_up: timedelta,
                   namespace: str = DEFAULT_NAMESPACE) -> Steps:
    """Push the due firings of the namespace's due schedules and advance each; run in one
    transaction. Returns the number of firings pushed."""
    fired = 0
    for row in (yield statements.due(namespace, MAX_FIRINGS_PER_PASS)):
        ticks, next_fire_at = _due_ticks(row, row.read_at - catch_up)
        if ticks[0] != row.next_fire_at:
            log.info("schedule %r of namespace %r missed its ticks from %s on; firing %s", row.name,
                     row.namespace, row.next_fire_at.isoformat(), ", ".join(t.isoformat() for t in ticks))
        yield from push_steps(job_sql, [_firing(row, tick) for tick in ticks])
        yield statements.advance(row, next_fire_at, ticks[-1])
        fired += len(ticks)
    return fired


# --- timing ----------------------------------------------------------------------------------
def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"Unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')") from None


def _next_after(moment: datetime, *, cron: str | None, every: float | None, timezone: str) -> datetime:
    """The first tick strictly after ``moment``."""
    if every is not None:
        return moment + timedelta(seconds=every)
    local = moment.astimezone(_zone(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(_UTC)


def _due_ticks(row: Schedule, oldest: datetime) -> tuple[list[datetime], datetime]:
    """The ticks to fire now (at least one: ``row`` is due) and the tick after them. Due
    ticks not older than ``oldest`` fire each (at most MAX_FIRINGS_PER_PASS per pass);
    older ones were missed: they are covered by those, or, if none is that recent, fire
    once, for the latest (Celery beat runs a missed entry once, whatever it missed)."""
    timing = _Timing(cron=row.cron, every=row.every, timezone=row.timezone)
    tick = max(row.next_fire_at, _first_at_or_after(oldest, row))
    ticks: list[datetime] = []
    while tick <= row.read_at and len(ticks) < MAX_FIRINGS_PER_PASS:
        ticks.append(tick)
        tick = _next_after(tick, **timing)
    if not ticks:
        latest = _last_at_or_before(row.read_at, row)
        return [latest], _next_after(latest, **timing)
    return ticks, tick


def _first_at_or_after(moment: datetime, row: Schedule) -> datetime:
    """The schedule's first tick at or after ``moment`` (an interval's ticks are
    ``next_fire_at`` plus whole intervals)."""
    if row.every is not None:
        step = timedelta(seconds=row.every)
        return row.next_fire_at + step * max(0, -((row.next_fire_at - moment) // step))
    return _next_after(moment - timedelta(microseconds=1), cron=row.cron, every=None, timezone=row.timezone)


def _last_at_or_before(moment: datetime, row: Schedule) -> datetime:
    """The schedule's last tick at or before ``moment`` (not before ``next_fire_at``)."""
    if row.every is not None:
        step = timedelta(seconds=row.every)
        return row.next_fire_at + step * max(0, (moment - row.next_fire_at) // step)
    local = (moment + timedelta(microseconds=1)).astimezone(_zone(row.timezone))
    return max(row.next_fire_at, croniter(row.cron, local).get_prev(datetime).astimezone(_UTC))


# --- firings ---------------------------------------------------------------------------------------
def _firing(row: Schedule, tick: datetime) -> Job:
    expires_at = tick + timedelta(seconds=row.expires_in) if row.expires_in else None
    return row.job.with_options(unique_key=firing_key(row.namespace, row.name, tick), expires_at=expires_at)


def firing_key(namespace: str | None, name: str, tick: datetime) -> str:
    """The unique key of a schedule's firing for ``tick``: apps sharing a database may
    name schedules alike. The default namespace's keys keep their pre-namespace form."""
    key = f"cron:{name}:{tick.isoformat()}"
    return key if namespace == DEFAULT_NAMESPACE else f"{key}@{namespace}"

