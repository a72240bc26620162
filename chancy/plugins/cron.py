"""Periodic jobs: cron expressions (``croniter``) and fixed intervals, stored in the
database and fired by the leader (and by ``chancy beat`` processes, if any run).

Each firing is pushed exactly once, even when leadership changes hands or a ``chancy
beat`` process fires alongside the leader: whoever fires locks the due schedule row,
pushes the firing's job and advances ``next_fire_at`` in **one transaction**, and the
advance only applies if ``next_fire_at`` is still what it read. A second firer either
skips the locked row or finds it advanced. The firing's job
also carries ``unique_key = "cron:<name>:<fire time ISO>"``, so the key is visible to
anyone inspecting jobs.

Ticks missed while no leader ran (e.g. during a failover) are fired late, each once, if
they are at most ``catch_up`` old; older ones are skipped and logged, so a long outage
does not come back as a flood.

The API the Celery beat layer uses::

    await Cron.schedule(app, "report", Job("proj.tasks.report"), cron="0 7 * * mon-fri",
                        timezone="Europe/Paris")
    await Cron.schedule(app, "ping", Job("proj.tasks.ping"), every=30, expires_in=25)
    await Cron.unschedule(app, "ping")
    await Cron.schedules(app)    # also schedule_sync / unschedule_sync / schedules_sync
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from chancy.errors import ConfigurationError
from chancy.job import Job
from chancy.plugin import Plugin
from chancy.plugins.sql import ClusterSQL, Schedule, dumps_job_template
from chancy.queues.pg import push_steps
from chancy.queues.sql import JobSQL, Steps, drive_async, drive_sync, single

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.worker import Worker

__all__ = ["Cron", "Schedule"]

log = logging.getLogger("chancy.cron")

_UTC = timezone.utc

#: At most this many late ticks of one schedule are pushed per pass.
MAX_FIRINGS_PER_PASS = 100


class Cron(Plugin):
    """Leader-only: fires due schedules. ``interval`` bounds how long a new or changed
    schedule waits to be noticed; due ticks are otherwise fired on time."""

    leader_only = True

    def __init__(self, interval: float = 1.0, catch_up: timedelta | float = timedelta(minutes=5)) -> None:
        super().__init__()
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigurationError(f"Cron interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.catch_up = catch_up if isinstance(catch_up, timedelta) else timedelta(seconds=catch_up)
        if self.catch_up.total_seconds() < 0:
            raise ConfigurationError(f"Cron catch_up must not be negative, got {catch_up!r}")

    async def run(self, worker: "Worker") -> None:
        await self.fire_forever(worker.app)

    async def fire_forever(self, app: "Chancy") -> None:
        """Fire due schedules until cancelled. Each tick is pushed once however many
        processes do this at once (see the module docstring): the leader does, and so
        does ``chancy beat``."""
        cluster_sql = ClusterSQL(app.names)
        while True:
            wait = self.interval
            try:
                async with app.connection() as conn:
                    async with conn.transaction():
                        await drive_async(conn, fire_due_steps(cluster_sql, app.job_sql, self.catch_up))
                    until_next = await drive_async(conn, single(cluster_sql.cron_wait()))
                if until_next is not None:
                    wait = min(wait, max(until_next, 0.005))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next round; nothing was half-done
                log.warning("firing cron schedules failed (%s)", exc)
            await asyncio.sleep(wait)

    # --- the API ------------------------------------------------------------------------------
    @staticmethod
    async def schedule(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                       every: float | timedelta | None = None, timezone: str = "UTC",
                       expires_in: float | None = None, enabled: bool = True) -> None:
        """Create or replace schedule ``name``: push ``job`` on ``cron`` (5 fields, or 6
        with seconds last) in ``timezone``, or ``every`` seconds. Each firing expires
        ``expires_in`` seconds after its tick if not started by then. Replacing a schedule
        with the same timing keeps its next tick."""
        steps = schedule_steps(ClusterSQL(app.names), name, job, cron, every, timezone, expires_in, enabled)
        async with app.connection() as conn:
            await drive_async(conn, steps)

    @staticmethod
    def schedule_sync(app: "Chancy", name: str, job: Job, *, cron: str | None = None,
                      every: float | timedelta | None = None, timezone: str = "UTC",
                      expires_in: float | None = None, enabled: bool = True) -> None:
        steps = schedule_steps(ClusterSQL(app.names), name, job, cron, every, timezone, expires_in, enabled)
        with app.connection_sync() as conn:
            drive_sync(conn, steps)

    @staticmethod
    async def unschedule(app: "Chancy", name: str) -> None:
        async with app.connection() as conn:
            await drive_async(conn, single(ClusterSQL(app.names).cron_delete(name)))

    @staticmethod
    def unschedule_sync(app: "Chancy", name: str) -> None:
        with app.connection_sync() as conn:
            drive_sync(conn, single(ClusterSQL(app.names).cron_delete(name)))

    @staticmethod
    async def schedules(app: "Chancy") -> list[Schedule]:
        async with app.connection() as conn:
            return await drive_async(conn, single(ClusterSQL(app.names).cron_list()))

    @staticmethod
    def schedules_sync(app: "Chancy") -> list[Schedule]:
        with app.connection_sync() as conn:
            return drive_sync(conn, single(ClusterSQL(app.names).cron_list()))


# --- operations (driven sync or async) --------------------------------------------------------
def schedule_steps(statements: ClusterSQL, name: str, job: Job, cron: str | None,
                   every: float | timedelta | None, tz: str, expires_in: float | None, enabled: bool) -> Steps:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"A schedule needs a non-empty name, got {name!r}")
    if not isinstance(job, Job):
        raise ConfigurationError(f"Cron.schedule takes a chancy.Job, got {type(job).__name__}")
    for field in ("id", "unique_key", "scheduled_at", "expires_at"):
        if getattr(job, field) is not None:
            raise ConfigurationError(
                f"A scheduled job must not set {field}: each firing gets its own "
                "(use expires_in= for an expiry relative to the tick)")
    if (cron is None) == (every is None):
        raise ConfigurationError("Give exactly one of cron= (an expression) or every= (seconds)")
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0):
        raise ConfigurationError(f"every must be a positive number of seconds or a timedelta, got {every!r}")
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron)):
        raise ConfigurationError(f"{cron!r} is not a valid cron expression (e.g. '*/5 * * * *')")
    _zone(tz)
    if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
        raise ConfigurationError(f"expires_in must be a positive number of seconds, got {expires_in!r}")
    now = yield statements.now
    row_timing = dict(cron=cron, every=float(seconds) if seconds is not None else None, timezone=tz)
    yield statements.cron_upsert({
        "name": name, "job": dumps_job_template(job), **row_timing, "expires_in": expires_in,
        "next_fire_at": _next_after(now, **row_timing), "enabled": enabled,
    })


def fire_due_steps(statements: ClusterSQL, job_sql: JobSQL, catch_up: timedelta) -> Steps:
    """Push every due tick of every due schedule and advance each; run in one transaction.
    Returns the number of firings pushed."""
    fired = 0
    for row in (yield statements.cron_due(MAX_FIRINGS_PER_PASS)):
        ticks, next_fire_at = _due_ticks(row, row.read_at - catch_up)
        if ticks[:1] != [row.next_fire_at]:
            log.warning("schedule %r skipped ticks from %s (more than %s late)", row.name,
                        row.next_fire_at.isoformat(), catch_up)
        if ticks:
            yield from push_steps(job_sql, [_firing(row, tick) for tick in ticks])
        yield statements.cron_advance(row.name, row.next_fire_at, next_fire_at, ticks[-1] if ticks else None)
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
    """Ticks from ``next_fire_at`` up to now that are not older than ``oldest`` (at most
    MAX_FIRINGS_PER_PASS of them), and the tick after the last one considered."""
    timing = dict(cron=row.cron, every=row.every, timezone=row.timezone)
    tick = row.next_fire_at
    if tick < oldest:  # skip stale ticks without walking through each
        if row.every is not None:
            missed = int((oldest - tick).total_seconds() // row.every)
            tick += timedelta(seconds=row.every * missed)
        if tick < oldest:
            tick = _next_after(oldest - timedelta(microseconds=1), **timing)
    ticks = []
    while tick <= row.read_at and len(ticks) < MAX_FIRINGS_PER_PASS:
        ticks.append(tick)
        tick = _next_after(tick, **timing)
    return ticks, tick


# --- firings ---------------------------------------------------------------------------------------
def _firing(row: Schedule, tick: datetime) -> Job:
    expires_at = tick + timedelta(seconds=row.expires_in) if row.expires_in else None
    return row.job.with_options(unique_key=f"cron:{row.name}:{tick.isoformat()}", expires_at=expires_at)

