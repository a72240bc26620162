"""The rules of cron schedules, written once for every store (:mod:`chancy.store.schedules`):
what a valid spec is, a schedule's ticks (cron expressions by ``croniter``, in a time zone,
or fixed intervals), which due ticks fire (missed ones collapse, as Celery beat's do;
``catch_up`` opts into firing each recent one), the job each firing pushes, and a job
template's stored JSON form. Pure: the stores bring the clock and the storage."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from chancy import serialization
from chancy.errors import ConfigurationError
from chancy.job import Backoff, Job, Limit
from chancy.namespaces import DEFAULT_NAMESPACE
from chancy.store.schedules import Schedule, Spec

log = logging.getLogger("chancy.cron")

_UTC = timezone.utc

#: At most this many late ticks of one schedule are pushed per pass.
MAX_FIRINGS_PER_PASS = 100


# --- what may be stored ------------------------------------------------------------------------
class Timing(TypedDict):
    """A schedule's timing as stored."""

    cron: str | None
    every: float | None
    timezone: str


def check(spec: Spec) -> Timing:
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
    return Timing(cron=cron, every=float(seconds) if seconds is not None else None, timezone=spec.timezone)


@dataclasses.dataclass(frozen=True)
class Checked:
    """A spec checked, in the form a store keeps it."""

    name: str
    job: str  # the template's JSON (see dumps_job_template)
    timing: Timing
    expires_in: float | None
    enabled: bool

    def first_tick_after(self, moment: datetime) -> datetime:
        """Its ``next_fire_at`` if stored at ``moment`` (a stored schedule of the same
        timing keeps its own instead)."""
        return next_after(moment, **self.timing)


def check_all(specs: Sequence[Spec]) -> list[Checked]:
    """Every spec checked (all before any is stored: one bad spec stores none)."""
    timings = [check(spec) for spec in specs]
    return [Checked(spec.name, dumps_job_template(spec.job), timing, spec.expires_in, spec.enabled)
            for spec, timing in zip(specs, timings, strict=True)]


def replacement_names(prefix: str, specs: Sequence[Spec]) -> list[str]:
    """The names of a set replacing the schedules named ``prefix…``, or a clear error."""
    names = [spec.name for spec in specs]
    outside = [name for name in names if not isinstance(name, str) or not name.startswith(prefix)]
    if outside:
        raise ConfigurationError(f"Schedules {outside!r} are not named {prefix!r}…, the set being replaced")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"Schedule names must be unique, got {sorted(names)!r}")
    return names


# --- ticks ------------------------------------------------------------------------------------
def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"Unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')") from None


def next_after(moment: datetime, *, cron: str | None, every: float | None, timezone: str) -> datetime:
    """The first tick strictly after ``moment``."""
    if every is not None:
        return moment + timedelta(seconds=every)
    local = moment.astimezone(_zone(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(_UTC)


def _timing(schedule: Schedule) -> Timing:
    return Timing(cron=schedule.cron, every=schedule.every, timezone=schedule.timezone)


def due_ticks(schedule: Schedule, oldest: datetime) -> tuple[list[datetime], datetime]:
    """The ticks to fire at ``schedule.read_at`` (at least one: it is due) and the tick
    after them. Due ticks not older than ``oldest`` fire each (at most
    MAX_FIRINGS_PER_PASS per pass); older ones were missed: they are covered by those, or,
    if none is that recent, fire once, for the latest (Celery beat runs a missed entry
    once, whatever it missed)."""
    tick = max(schedule.next_fire_at, _first_at_or_after(oldest, schedule))
    ticks: list[datetime] = []
    while tick <= schedule.read_at and len(ticks) < MAX_FIRINGS_PER_PASS:
        ticks.append(tick)
        tick = next_after(tick, **_timing(schedule))
    if not ticks:
        latest = _last_at_or_before(schedule.read_at, schedule)
        return [latest], next_after(latest, **_timing(schedule))
    return ticks, tick


def _first_at_or_after(moment: datetime, schedule: Schedule) -> datetime:
    """The schedule's first tick at or after ``moment`` (an interval's ticks are
    ``next_fire_at`` plus whole intervals)."""
    if schedule.every is not None:
        step = timedelta(seconds=schedule.every)
        return schedule.next_fire_at + step * max(0, -((schedule.next_fire_at - moment) // step))
    return next_after(moment - timedelta(microseconds=1), cron=schedule.cron, every=None, timezone=schedule.timezone)


def _last_at_or_before(moment: datetime, schedule: Schedule) -> datetime:
    """The schedule's last tick at or before ``moment`` (not before ``next_fire_at``)."""
    if schedule.every is not None:
        step = timedelta(seconds=schedule.every)
        return schedule.next_fire_at + step * max(0, (moment - schedule.next_fire_at) // step)
    local = (moment + timedelta(microseconds=1)).astimezone(_zone(schedule.timezone))
    return max(schedule.next_fire_at, croniter(schedule.cron, local).get_prev(datetime).astimezone(_UTC))


# --- firings ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Firings:
    """What firing a due schedule pushes, and where the schedule moves on to."""

    jobs: list[Job]
    next_fire_at: datetime
    last_tick: datetime


def firings(schedule: Schedule, catch_up: timedelta) -> Firings:
    """The firings of a due ``schedule`` read at ``schedule.read_at`` (see :func:`due_ticks`)."""
    ticks, next_fire_at = due_ticks(schedule, schedule.read_at - catch_up)
    if ticks[0] != schedule.next_fire_at:
        log.info("schedule %r of namespace %r missed its ticks from %s on; firing %s", schedule.name,
                 schedule.namespace, schedule.next_fire_at.isoformat(), ", ".join(t.isoformat() for t in ticks))
    return Firings([_firing(schedule, tick) for tick in ticks], next_fire_at, ticks[-1])


def _firing(schedule: Schedule, tick: datetime) -> Job:
    expires_at = tick + timedelta(seconds=schedule.expires_in) if schedule.expires_in else None
    return schedule.job.with_options(unique_key=firing_key(schedule.namespace, schedule.name, tick),
                                     expires_at=expires_at)


def firing_key(namespace: str | None, name: str, tick: datetime) -> str:
    """The unique key of a schedule's firing for ``tick``, ``cron:<name>:<tick ISO>``, plus
    ``@<namespace>`` (apps sharing a database may name schedules alike) except in the
    default namespace, whose keys keep their pre-namespace form."""
    key = f"cron:{name}:{tick.isoformat()}"
    return key if namespace == DEFAULT_NAMESPACE else f"{key}@{namespace}"


# --- job templates -------------------------------------------------------------------------------
def dumps_job_template(job: Job) -> str:
    """A job's reusable part (no id, times or unique key) as stored JSON."""
    serialization.dumps_arguments(job.func, job.args, job.kwargs)  # fails early, naming the task
    return serialization.dumps({
        "func": job.func, "args": list(job.args), "kwargs": dict(job.kwargs), "queue": job.queue,
        "priority": job.priority, "max_attempts": job.max_attempts,
        "limits": [lim.to_dict() for lim in job.limits],
        "backoff": job.backoff.to_dict() if job.backoff else None, "meta": dict(job.meta),
        "concurrency_key": job.concurrency_key, "concurrency": job.concurrency,
    })


def loads_job_template(text: str) -> Job:
    data: dict[str, Any] = serialization.loads(text)
    return Job(
        data["func"], args=data["args"], kwargs=data["kwargs"], queue=data["queue"],
        priority=data["priority"], max_attempts=data["max_attempts"],
        limits=[Limit.from_dict(d) for d in data["limits"]],
        backoff=Backoff.from_dict(data["backoff"]) if data["backoff"] else None, meta=data["meta"],
        concurrency_key=data.get("concurrency_key"), concurrency=data.get("concurrency"),  # none before keys
    )
