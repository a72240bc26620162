"""The queue contract. A queue is a plugin: it carries its settings (concurrency,
executor, polling interval) and the storage that holds its jobs. The Postgres queue is
the default; the in-memory queue implements the same contract for tests."""

from __future__ import annotations

import abc
import dataclasses
import uuid
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Sequence

from chancy.errors import ConfigurationError
from chancy.job import Job, JobRecord, JobState
from chancy.store.protocol import JobStore

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.executors.base import Executor
    from chancy.rate_limits import RateLimit
    from chancy.store.pg.statements import Steps

ExecutorFactory = Callable[["QueuePlugin"], "Executor"]

EXECUTOR_ALIASES = {
    "asyncio": "chancy.executors.asyncio:AsyncExecutor",
    "thread": "chancy.executors.thread:ThreadExecutor",
    "threads": "chancy.executors.thread:ThreadExecutor",
    "process": "chancy.executors.process:ProcessExecutor",
    "prefork": "chancy.executors.process:ProcessExecutor",
    "solo": "chancy.executors.asyncio:AsyncExecutor",
}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a rate-limit gate decided: the jobs that start now, and in how many seconds
    (the queue's clock) the first deferred one is due (None: none deferred)."""

    admitted: frozenset[uuid.UUID]
    next_due: float | None
    unknown_tasks: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Transition:
    """What the worker decided an attempt's outcome does to its row."""

    job_id: uuid.UUID
    state: JobState  # SUCCEEDED, FAILED, RETRYING or CANCELLED
    result_json: str | None = None
    error: dict[str, Any] | None = None
    delay: float | None = None  # seconds until the retry, when RETRYING (database clock)
    max_attempts: int | None = None  # when the task changed its budget
    #: The attempt this outcome belongs to: a stale attempt's outcome changes nothing
    #: (e.g. one that kept running here after recovery gave its job to a new attempt).
    attempt: int | None = None
    #: Statements to run in the transaction that writes this transition, and only if the
    #: write applied (e.g. the next step of a workflow): a crash loses or repeats neither.
    follow_up: "Callable[[], Steps] | None" = None
    #: How often the database refused a write this outcome was in; once refused, it is
    #: written by itself (not beside a claim), where a bad row is isolated.
    refusals: int = 0


def _load_executor(path: str) -> ExecutorFactory:
    import importlib

    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class QueuePlugin(JobStore, abc.ABC):
    """A named queue: its settings, and the storage that holds its jobs, which implements
    :class:`~chancy.store.protocol.JobStore` (the contract of every operation is there).
    Here: the defaults of the operations a storage may do better by itself."""

    def __init__(
        self,
        name: str,
        concurrency: int = 1,
        executor: ExecutorFactory | str = "asyncio",
        polling_interval: float = 1.0,
        fair_keys: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ConfigurationError(f"Queue name must be a non-empty string of at most 200 characters, got {name!r}")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ConfigurationError(f"Queue {name!r}: concurrency must be an integer >= 1, got {concurrency!r}")
        if not isinstance(polling_interval, (int, float)) or polling_interval <= 0:
            raise ConfigurationError(
                f"Queue {name!r}: polling_interval must be a positive number of seconds, got {polling_interval!r}"
            )
        if isinstance(executor, str):
            if executor not in EXECUTOR_ALIASES and ":" not in executor:
                raise ConfigurationError(
                    f"Queue {name!r}: unknown executor {executor!r}; choose one of "
                    f"{sorted(set(EXECUTOR_ALIASES))} or give 'module:Class' or a callable"
                )
            executor_path = EXECUTOR_ALIASES.get(executor, executor)
            executor = (lambda path: lambda queue: _load_executor(path)(queue))(executor_path)
        elif not callable(executor):
            raise ConfigurationError(f"Queue {name!r}: executor must be a name or a callable, got {executor!r}")
        self.name = name
        self.concurrency = concurrency
        self.executor_factory: ExecutorFactory = executor
        self.polling_interval = float(polling_interval)
        #: Claims take turns between concurrency keys (each key's best job before a second
        #: job of any key), so one key's burst does not hold back another key's jobs.
        self.fair_keys = bool(fair_keys)
        self.app: "Chancy | None" = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} concurrency={self.concurrency}>"

    def bind(self, app: "Chancy") -> None:
        """Called once when the queue is given to an app."""
        self.app = app

    def make_executor(self) -> "Executor":
        return self.executor_factory(self)

    # --- defaults of the contract ---------------------------------------------------
    async def push_calls(self, template: Job, calls: Sequence[Sequence[Any]],
                         connection: Any = None) -> list[uuid.UUID]:
        """A :meth:`push` of one job per call."""
        return await self.push([template.with_options(args=args) for args in calls], connection)

    def push_calls_sync(self, template: Job, calls: Sequence[Sequence[Any]], connection: Any = None) -> list[uuid.UUID]:
        return self.push_sync([template.with_options(args=args) for args in calls], connection)

    def watch(self, on_pushed: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]) -> Callable[[], None]:
        """Nothing to do: a Postgres queue's workers hear pushes and cancels through their
        LISTEN connection."""
        return lambda: None

    async def gate(self, worker_id: str, records: Sequence[JobRecord],
                   limits: Mapping[str, "RateLimit"]) -> Verdict:
        """Admit every job: for queues that cannot count starts (a worker warns at start
        that their limits go unenforced)."""
        return Verdict(frozenset(r.id for r in records), None)

    @property
    def enforces_rate_limits(self) -> bool:
        return type(self).gate is not QueuePlugin.gate

    async def release_unknown(self, worker_id: str, owned: Collection[uuid.UUID], *,
                              previous_life: bool = False) -> list[uuid.UUID]:
        """None to hand back: for queues whose claims cannot lose their answer."""
        return []

    async def write_back_and_claim(self, worker_id: str, transitions: Sequence[Transition],
                                   limit: int, start: int | None = None) -> list[JobRecord]:
        """Two steps; a queue that can do both in one round trip overrides this."""
        if transitions:
            await self.write_back(worker_id, transitions)
        return await self.claim(worker_id, limit, start)
