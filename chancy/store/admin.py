"""What operators ask of a store (the ``chancy`` CLI, the dashboard, the test helpers),
whatever the store: which jobs a filter selects, which of them each bulk action may
touch, and the shapes of the answers. The statements themselves are in
:mod:`chancy.store.pg.admin`."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import datetime
from typing import Any, TypedDict

from chancy.job import FINISHED_STATES, LIVE_STATES, JobState

#: States ``purge`` may delete: never ``running`` (a worker holds those rows).
PURGEABLE_STATES = frozenset(JobState) - {JobState.RUNNING}

#: Rows one bulk statement changes at most: each batch is its own short transaction,
#: locking only its rows (and skipping rows someone else holds), never the table.
BULK_BATCH = 1000


class BulkAction(str, enum.Enum):
    RETRY = "retry"
    CANCEL = "cancel"
    DELETE = "delete"


#: The states each bulk action may touch, as the single-job actions allow: retry what
#: ended badly, cancel what has not ended (a running job's worker is told to stop it),
#: delete what has ended, or with ``force`` anything but a running job.
BULK_STATES = {
    BulkAction.RETRY: frozenset({JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}),
    BulkAction.CANCEL: LIVE_STATES,
    BulkAction.DELETE: FINISHED_STATES,
}
FORCED_DELETE_STATES = frozenset(JobState) - {JobState.RUNNING}


class BulkRefused(ValueError):
    """A bulk action asked for states it may not touch, or selected nothing at all."""


@dataclasses.dataclass(frozen=True)
class JobSelection:
    """Which jobs a listing or a bulk action covers: those matching every filter given
    (the CLI's ``jobs list`` and bulk options, the dashboard's job list filter)."""

    states: tuple[JobState, ...] = ()
    queues: tuple[str, ...] = ()
    task: str | None = None  # the exact task name
    task_contains: str | None = None  # part of the task name, any case (the dashboard's filter)
    text: str | None = None  # part of the arguments as JSON text, any case
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    ids: tuple[uuid.UUID, ...] = ()

    @property
    def is_everything(self) -> bool:
        return not (self.states or self.queues or self.task or self.task_contains or self.text
                    or self.since or self.until or self.ids)

    def states_for(self, action: BulkAction, force: bool = False) -> list[str]:
        """The states ``action`` touches within this selection; refuses asked-for states
        it may not touch, rather than silently skipping them."""
        allowed = FORCED_DELETE_STATES if action is BulkAction.DELETE and force else BULK_STATES[action]
        refused = sorted(s.value for s in self.states if s not in allowed)
        if refused:
            hint = " (add force to delete waiting jobs too)" if action is BulkAction.DELETE and not force else ""
            raise BulkRefused(f"cannot {action.value} {', '.join(refused)} jobs: {action.value} applies only to "
                              f"{', '.join(sorted(s.value for s in allowed))} jobs{hint}")
        return sorted(s.value for s in (self.states or allowed))


class WorkerRow(TypedDict):
    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    tags: list[str]
    started_at: datetime
    heartbeat_age: float  # seconds since the last heartbeat, on the database clock
    alive: bool  # it promised its next heartbeat (expires_at) and that time has not passed
    running: int
    running_jobs: list[str]  # ids of the jobs it runs, oldest start first
    uptime: float  # seconds since it started, on the database clock


@dataclasses.dataclass(frozen=True)
class TableHealth:
    live_rows: int
    dead_rows: int
    since_vacuum_seconds: float | None  # None: never vacuumed since the statistics began
    oldest_transaction_seconds: float | None  # None: no open transaction holds back vacuum

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
