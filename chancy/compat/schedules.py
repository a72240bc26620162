"""Celery's beat schedules, ``crontab`` and ``schedule``, as the cluster cron's timing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chancy.errors import ConfigurationError


class schedule:  # noqa: N801 - Celery's name
    """Run every ``run_every`` (seconds or a timedelta)."""

    def __init__(self, run_every: float | timedelta | None = None, relative: bool = False,
                 nowfun: Any = None, app: Any = None) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
            raise ConfigurationError(f"schedule(run_every=…) needs a positive number of seconds, got {run_every!r}")
        self.run_every = timedelta(seconds=seconds)
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def timing(self) -> dict[str, Any]:
        return {"every": self.seconds}

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and type(other) is type(self) and other.run_every == self.run_every


class crontab(schedule):  # noqa: N801 - Celery's name
    """A cron-like schedule: ``crontab(minute=0, hour='*/3', day_of_week='mon-fri')``."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", **kwargs: Any) -> None:
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.expression = " ".join(_field(v) for v in (minute, hour, day_of_month, month_of_year, day_of_week))
        from croniter import croniter

        if not croniter.is_valid(self.expression):
            raise ConfigurationError(f"crontab{self._orig} is not a valid schedule ({self.expression!r})")

    def timing(self) -> dict[str, Any]:
        return {"cron": self.expression}

    def __repr__(self) -> str:
        return f"<crontab: {self.expression} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expression == self.expression


def _field(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in sorted(value, key=str))
    return str(value).replace(" ", "")


def timing_of(value: Any) -> dict[str, Any]:
    """``cron=`` or ``every=`` for a beat entry's ``schedule`` (seconds, timedelta, schedule)."""
    if isinstance(value, schedule):
        return value.timing()
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value).timing()
    raise ConfigurationError(
        f"beat schedule {value!r} is not supported: use seconds, a timedelta, schedule() or crontab() "
        "(solar schedules are not supported)")
