"""The facts a worker's metrics record about each attempt it finishes, observed where the
outcome is written (the worker process, whatever the pool: a process-pool child's job is
counted by its worker), through the app's completion hooks (:mod:`chancy.hooks`)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable

from chancy.job import JobRecord, JobState

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.queue import Transition

#: Histogram bucket bounds in seconds, for run times and queue lag alike (the dashboard's too).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

#: Outcomes of an attempt that failed (whether or not the job will be retried).
FAILED_OUTCOMES = frozenset({JobState.FAILED.value, JobState.RETRYING.value})


@dataclasses.dataclass(frozen=True)
class FinishedAttempt:
    """One attempt of a job, as its worker decided it."""

    queue: str
    task: str
    #: The state the attempt moves its job to: succeeded, failed, retrying or cancelled.
    outcome: str
    #: Seconds from its start to its outcome (the figure of the worker's log line).
    duration: float | None
    #: Seconds from when the job was due (``scheduled_at``) to its start: the queue's lag.
    lag: float | None

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    @classmethod
    def of(cls, record: JobRecord, transition: "Transition") -> "FinishedAttempt":
        started = record.started_at
        return cls(
            queue=record.queue, task=record.func, outcome=transition.state.value,
            duration=max(0.0, time.time() - started.timestamp()) if started else None,
            lag=max(0.0, (started - record.scheduled_at).total_seconds()) if started else None,
        )


def observe(app: "Chancy", sink: Callable[[FinishedAttempt], None]) -> Callable[[], None]:
    """Call ``sink`` with each attempt that workers of ``app`` in this process finish;
    returns the function that stops it. A failing sink is logged by the worker, and the
    job's outcome is written all the same."""

    def hook(_app: "Chancy", record: JobRecord, transition: "Transition") -> None:
        sink(FinishedAttempt.of(record, transition))

    return app.hooks.on_completion(hook)
