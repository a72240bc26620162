"""Task rate limits: ``@chancy.task(rate_limit="10/m")`` allows at most 10 starts of that
task in any 60 seconds across every worker of the cluster (Celery's limit is per worker).

The limit is a property of the task's code, so the worker that runs it knows it. The claim
stays as it is; right after it, the worker passes the claimed jobs of rate-limited tasks
through its queue's gate (:meth:`chancy.queue.QueuePlugin.gate`): for a Postgres queue one
statement (:mod:`chancy.store.pg.rates`) that counts the task's starts in the database,
for the in-memory queue :func:`settle` on this process's counts. Jobs over budget go
back, without charging an attempt, to become due when the window frees. Jobs of other
tasks never reach the gate."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence, Union

from chancy.errors import ConfigurationError
from chancy.job import JobRecord
from chancy.queue import Verdict

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.queue import QueuePlugin

log = logging.getLogger("chancy.rate_limits")

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*([smh]))?\s*$")
ACCEPTED = "'N/s', 'N/m', 'N/h', a bare number N (per second), or None / 0 for no limit"


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most ``count`` starts in any ``period`` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ConfigurationError(f"A rate limit needs count >= 1 and period > 0, got {self.count}/{self.period}")

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


RateLimitLike = Union[RateLimit, str, int, float, None]


def parse(value: RateLimitLike) -> RateLimit | None:
    """Celery's syntax: ``"100/s"``, ``"10/m"``, ``"1000/h"``, a bare number per second;
    ``None`` or 0 means unlimited. A fractional count keeps the rate with a burst of one
    (``"0.5/s"`` is one start every 2 s)."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str) and value.strip():
        match = _RATE.match(value)
        if match is None:
            raise ConfigurationError(f"rate_limit {value!r} is not a rate; use {ACCEPTED}")
        number, period = float(match.group(1)), PERIODS[match.group(2) or "s"]
    elif isinstance(value, str):
        return None  # Celery reads an empty rate as no limit
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number, period = float(value), 1.0
    else:
        raise ConfigurationError(f"rate_limit {value!r} is not a rate; use {ACCEPTED}")
    if not math.isfinite(number) or number < 0:
        raise ConfigurationError(f"rate_limit {value!r} is not a rate; use {ACCEPTED}")
    if number == 0:
        return None
    if number.is_integer():
        return RateLimit(int(number), period)
    return RateLimit(1, period / number)


#: The rate limit of every task defined in this process that has one, by task name
#: (kept next to :data:`chancy.execution.registry`, and for the same reason).
declared: dict[str, RateLimit] = {}

def declare(task: str, value: RateLimitLike) -> None:
    """Set (or, with None, clear) the limit of a task defined in this process."""
    limit = parse(value)
    if limit is None:
        declared.pop(task, None)
    else:
        declared[task] = limit


def limits_for(app: "Chancy") -> dict[str, RateLimit]:
    """The limits a worker of ``app`` enforces: the tasks' declared here, and what the
    app's own sources add (:meth:`chancy.hooks.Hooks.on_rate_limits`)."""
    return {**declared, **app.hooks.rate_limits()}


def waited(record: JobRecord) -> bool:
    """The job's time had come before this claim (deferred, retried or scheduled); a
    pushed job is due when created."""
    return record.scheduled_at > record.created_at


def gate_order(records: Iterable[JobRecord]) -> list[JobRecord]:
    """The order in which a gate hands out a task's free starts: jobs that already waited
    first, then the best."""
    return sorted(records, key=lambda r: (not waited(r), -r.priority, r.id))


@dataclasses.dataclass
class TaskWindow:
    """One task's recent start times and the end of its line of deferred new jobs: what
    the Postgres gate keeps in a row, for a gate that counts in this process."""

    starts: list[datetime] = dataclasses.field(default_factory=list)
    deferred_until: datetime | None = None


def settle(window: TaskWindow, ordered: Sequence[JobRecord], limit: RateLimit,
           now: datetime) -> dict[uuid.UUID, datetime | None]:
    """The Postgres gate's rule for one task, in Python: each of the ``ordered`` jobs either
    starts now (None) or is due at the returned time. The first ``count - recent`` start;
    the j-th over budget waits until enough starts leave the window (a period later per
    round of ``count``); a new job also joins the end of the task's line, spaced
    ``period / count`` apart. ``window`` is updated."""
    period = timedelta(seconds=limit.period)
    recent = sorted(t for t in window.starts if t > now - period)
    free = max(0, limit.count - len(recent))
    starting = min(free, len(ordered))
    starts = recent + [now] * starting
    window.starts = starts
    over = ordered[starting:]
    if not over:
        return {r.id: None for r in ordered}
    gap = period / limit.count
    line_end = max(filter(None, (starts[-limit.count] + period, window.deferred_until)))
    waited_over = max(0, sum(waited(r) for r in ordered) - free)
    verdicts: dict[uuid.UUID, datetime | None] = {r.id: None for r in ordered[:starting]}
    for j, record in enumerate(over):
        exact = starts[len(starts) - limit.count + j % limit.count] + period * (j // limit.count + 1)
        due = exact if waited(record) else max(exact, line_end + gap * (j - waited_over))
        verdicts[record.id] = due
        window.deferred_until = max(filter(None, (window.deferred_until, due + gap)))
    return verdicts


class RateGate:
    """One worker's gate: admits the claimed jobs of rate-limited tasks that fit in their
    task's window and hands the others back to wait."""

    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        self.limits = dict(limits)

    async def admit(self, queue: "QueuePlugin", worker_id: str, records: list[JobRecord],
                    wake: Callable[[], None], stopping: asyncio.Event) -> list[JobRecord]:
        """The claimed ``records`` that may start now. Jobs of unlimited tasks pass without a
        round trip; deferred ones are no longer ours, and ``wake`` is called when the
        first of them is due."""
        limited = [r for r in records if r.func in self.limits]
        if not limited:
            return records
        verdict = await self._settle(queue, worker_id, limited, stopping)
        if verdict.next_due is not None:
            asyncio.get_running_loop().call_later(verdict.next_due, wake)
        return [r for r in records if r.func not in self.limits or r.id in verdict.admitted]

    async def _settle(self, queue: "QueuePlugin", worker_id: str, limited: list[JobRecord],
                      stopping: asyncio.Event) -> Verdict:
        """Run the gate, retrying through a database outage: the claimed rows are ours until
        it settles them. A worker that stops first leaves them to recovery."""
        delay = 0.1
        while True:
            try:
                return await queue.gate(worker_id, limited, self.limits)
            except Exception as exc:  # noqa: BLE001 - the database may come back
                if stopping.is_set():
                    log.error("rate-limit gate failed while stopping (%s): %d claimed job(s) are left to "
                              "recovery", exc, len(limited))
                    return Verdict(frozenset(), None)
                log.warning("rate-limit gate failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def describe(limits: Mapping[str, RateLimit]) -> str:
    """``name=10/60s, …`` for the worker's start-up log."""
    return ", ".join(f"{name}={limit}" for name, limit in sorted(limits.items()))

