"""Cron schedules as stored (``sql/schedules.sql``): the row type, the job template's
JSON form, and the statements of one namespace's schedules. When and what to fire is
decided by :mod:`chancy.plugins.cron`."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Sequence

from chancy import serialization
from chancy.job import Backoff, Job, Limit
from chancy.migrations import Names
from chancy.store.pg.statements import SqlFile, Statement


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A stored cron schedule (see :mod:`chancy.plugins.cron`)."""

    namespace: str | None  # the app it belongs to (None: stored before namespaces, no app's yet)
    name: str
    job: Job  # the template each firing is made from
    cron: str | None
    every: float | None
    timezone: str
    expires_in: float | None
    next_fire_at: datetime
    last_fired_at: datetime | None
    enabled: bool
    read_at: datetime  # the database clock when the row was read


def dumps_job_template(job: Job) -> str:
    """A job's reusable part (no id, times or unique key) as stored JSON."""
    serialization.dumps_arguments(job.func, job.args, job.kwargs)  # fails early, naming the task
    return serialization.dumps({
        "func": job.func, "args": list(job.args), "kwargs": dict(job.kwargs), "queue": job.queue,
        "priority": job.priority, "max_attempts": job.max_attempts,
        "limits": [lim.to_dict() for lim in job.limits],
        "backoff": job.backoff.to_dict() if job.backoff else None, "meta": dict(job.meta),
    })


def loads_job_template(text: str) -> Job:
    data: dict[str, Any] = serialization.loads(text)
    return Job(
        data["func"], args=data["args"], kwargs=data["kwargs"], queue=data["queue"],
        priority=data["priority"], max_attempts=data["max_attempts"],
        limits=[Limit.from_dict(d) for d in data["limits"]],
        backoff=Backoff.from_dict(data["backoff"]) if data["backoff"] else None, meta=data["meta"],
    )


def _schedules(rows: list[tuple]) -> list[Schedule]:
    return [Schedule(row[0], row[1], loads_job_template(row[2]), *row[3:]) for row in rows]


class ScheduleSQL:
    """The statements of the schedules of one table prefix, each scoped to a namespace."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self._sql = SqlFile("schedules.sql", names.fields())
        #: The database clock (timings are computed from it, never from this host's).
        self.now = Statement(self._sql["now"], {}, lambda rows: rows[0][0])

    def upsert(self, params: dict[str, Any]) -> Statement:
        """Store a schedule (``params``: its columns); an unchanged timing keeps its next tick."""
        return Statement(self._sql["upsert"], params)

    def adopt(self, namespace: str, names: Sequence[str]) -> Statement:
        """Take over the namespace-less rows (stored before namespaces) named ``names``."""
        return Statement(self._sql["adopt"], {"namespace": namespace, "names": list(names)})

    def due(self, namespace: str, batch: int) -> Statement:
        """Up to ``batch`` due schedules, locked for the firing transaction."""
        return Statement(self._sql["due"], {"namespace": namespace, "batch": batch}, _schedules)

    def advance(self, schedule: Schedule, next_: datetime, fired: datetime | None) -> Statement:
        """Move ``schedule`` on to ``next_``, if no one else did since it was read."""
        params = {"namespace": schedule.namespace, "name": schedule.name, "expected": schedule.next_fire_at,
                  "next": next_, "fired": fired}
        return Statement(self._sql["advance"], params)

    def wait(self, namespace: str) -> Statement:
        """Seconds until the namespace's next schedule is due (None: none is enabled)."""
        return Statement(self._sql["wait"], {"namespace": namespace}, lambda rows: rows[0][0])

    def list(self, namespace: str) -> Statement:
        return Statement(self._sql["list"], {"namespace": namespace}, _schedules)

    def delete(self, namespace: str, name: str) -> Statement:
        return Statement(self._sql["delete"], {"namespace": namespace, "name": name})

    def delete_others(self, namespace: str, prefix: str, keep: Sequence[str]) -> Statement:
        """Delete the namespace's schedules named ``prefix…`` except those in ``keep``."""
        return Statement(self._sql["delete_others"], {"namespace": namespace, "prefix": prefix, "keep": list(keep)})

    def try_lead(self, namespace: str) -> Statement:
        """Take the namespace's firing lock on this session if free (True: taken or held)."""
        key = self.names.advisory_key(f"cron:{namespace}")
        return Statement(self._sql["try_lead"], {"key": key}, lambda rows: bool(rows[0][0]))
