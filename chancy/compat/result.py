"""Celery's result API (``AsyncResult``, ``GroupResult``, ``EagerResult``) read from job
rows. ``get()`` waits on the completion notification of the row, not a poll loop."""

from __future__ import annotations

import builtins
import importlib
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import chancy.compat.rows as rows
import chancy.compat.states as states
from chancy.compat.exceptions import TaskRevokedError, TimeoutError
from chancy.compat.local import current_task_and_request, get_current_app
from chancy.compat.protocol import celery_retries, job_id_for
from chancy.job import Job, JobRecord, JobState

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery

#: How often ``get()`` looks for a task id that has no row yet (a task never sent).
UNKNOWN_ID_RECHECK = 0.5


def exception_from_error(error: dict[str, Any] | None) -> BaseException:
    """The exception an attempt raised, rebuilt from its stored description: the real class
    when importable and constructible from its message, else a same-named stand-in."""
    if not error:
        return Exception("unknown error")
    path = error.get("type", "builtins.Exception")
    module_name, _, qualname = path.rpartition(".")
    message = error.get("message", "")
    cls: Any = None
    try:
        cls = importlib.import_module(module_name or "builtins")
        for piece in qualname.split("."):
            cls = getattr(cls, piece)
    except (ImportError, AttributeError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a constructor wanting other arguments
            pass
    stand_in = type(qualname.rsplit(".", 1)[-1] or "Exception", (Exception,), {"__module__": module_name})
    return stand_in(message)


def _column(record: JobRecord | None, name: str) -> Any:
    return getattr(record, name) if record is not None else None


def _assert_will_not_block() -> None:
    running = current_task_and_request()
    if running is not None and not running[1].called_directly and not running[1].is_eager:
        raise RuntimeError(
            "Never call result.get() within a task! It can deadlock the workers. Use a chain or "
            "a chord instead, or pass disable_sync_subtasks=False if you really mean it.")


class AsyncResult:
    """A task's result handle: state, value and waiting, read from its job row."""

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None, app: "Celery | None" = None,
                 parent: Any = None) -> None:
        if app is None:
            app = get_current_app()
        self.id = str(id)
        self.app = app
        self.name = task_name
        self.parent = parent
        #: Sent with ``ignore_result``: ``get()`` returns None at once, as in Celery.
        self.ignored = False
        self._record: JobRecord | None = None

    task_id = property(lambda self: self.id)

    @classmethod
    def of_job(cls, job: Job, app: "Celery") -> "AsyncResult":
        """The handle ``apply_async`` returns for a job it just sent."""
        celery = job.meta.get("celery", {})
        result = cls(celery.get("task_id") or str(job.id), app=app)
        result.ignored = bool(celery.get("ignore_result"))
        return result

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return isinstance(other, str) and other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # --- reading the row ----------------------------------------------------------------------
    @property
    def _job_id(self) -> Any:
        return job_id_for(self.id)

    def _read(self) -> JobRecord | None:
        if self._record is not None and self._record.is_finished:
            return self._record  # a finished row never changes again
        self._record = self.app.chancy.get_job_sync(self._job_id)
        return self._record

    @property
    def state(self) -> str:
        record = self._read()
        if record is None:
            return states.PENDING
        celery = record.meta.get("celery", {})
        return states.from_job_state(record.state, track_started=bool(celery.get("track_started", True)),
                                     custom=celery.get("state"))

    status = state

    @property
    def result(self) -> Any:
        record = self._read()
        if record is None:
            return None
        return self._value(record)

    info = result

    def _value(self, record: JobRecord) -> Any:
        if record.state is JobState.SUCCEEDED:
            # A task run with ignore_result has no result to read, as in Celery (the row
            # keeps it all the same, for the canvas steps it feeds).
            return None if record.meta.get("celery", {}).get("ignore_result") else record.result
        if record.state in (JobState.FAILED, JobState.RETRYING):
            return exception_from_error(record.errors[-1] if record.errors else None)
        if record.state in (JobState.CANCELLED, JobState.EXPIRED):
            ended = "revoked" if record.state is JobState.CANCELLED else "expired"
            return TaskRevokedError(f"Task {self.id} was {ended}")
        return record.meta.get("celery", {}).get("info")

    @property
    def traceback(self) -> str | None:
        record = self._read()
        if record is None or record.state not in (JobState.FAILED, JobState.RETRYING):
            return None
        return record.traceback

    @property
    def date_done(self) -> datetime | None:
        record = self._read()
        return record.completed_at if record is not None and record.is_finished else None

    @property
    def retries(self) -> int:
        record = self._read()
        return celery_retries(record) if record else 0

    args = property(lambda self: _column(self._read(), "args"), doc="The task's positional arguments.")
    kwargs = property(lambda self: _column(self._read(), "kwargs"), doc="The task's keyword arguments.")
    queue = property(lambda self: _column(self._read(), "queue"), doc="The queue the task was sent to.")
    worker = property(lambda self: _column(self._read(), "taken_by"), doc="The worker that ran it last.")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # --- waiting --------------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, callback: Any = None,
            on_message: Any = None, on_interval: Any = None, disable_sync_subtasks: bool = True,
            **kwargs: Any) -> Any:
        """Wait for the task and return its value; raise its exception (``propagate``) or
        :class:`~chancy.compat.exceptions.TimeoutError` after ``timeout`` seconds.
        A result sent with ``ignore_result`` returns None at once, as Celery's does."""
        if self.ignored:
            return None
        if disable_sync_subtasks:
            _assert_will_not_block()
        if follow_parents and propagate and self.parent is not None:
            self._raise_failed_parent()
        record = self._wait(timeout, interval)
        if propagate:
            self.maybe_throw(record)
        value = self._value(record)
        if callback is not None:
            callback(self.id, value)
        return value

    wait = get

    def _wait(self, timeout: float | None, interval: float) -> JobRecord:
        # A finished task is one read on the statement pool: no LISTEN session, no
        # LISTEN/UNLISTEN round trips (the common ``get()`` of a done task, well under 1 ms).
        record = self._read()
        if record is not None and record.is_finished:
            return record
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._record = self.app.chancy.wait_sync(self._job_id, timeout=remaining)
                return self._record
            except builtins.TimeoutError:
                raise TimeoutError(f"The operation timed out: task {self.id} not ready after {timeout}s") from None
            except KeyError:  # no row (yet): an unknown id reads as PENDING, as in Celery
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"The operation timed out: no task {self.id} after {timeout}s") from None
                time.sleep(min(max(interval, 0.05), UNKNOWN_ID_RECHECK, remaining if remaining is not None else 1e9))

    def _raise_failed_parent(self) -> None:
        parent = self.parent
        while parent is not None:
            if isinstance(parent, AsyncResult) and parent.state == states.FAILURE:
                parent.maybe_throw()
            parent = getattr(parent, "parent", None)

    def maybe_throw(self, record: JobRecord | None = None, propagate: bool = True) -> None:
        record = record or self._read()
        if record is None or not propagate:
            return
        if record.state in (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED):
            raise self._value(record)

    # --- acting on the task ---------------------------------------------------------------------
    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None, wait: bool = False,
               timeout: float | None = None) -> None:
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def revoke_by_stamped_headers(self, headers: dict[str, Any], terminate: bool = False, signal: Any = None,
                                  **kwargs: Any) -> None:
        """Revoke every task stamped with one of these header values (not only this one)."""
        self.app.control.revoke_by_stamped_headers(headers, terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Delete the finished task's row (and so its result)."""
        rows.forget(self.app.chancy, self.id)
        self._record = None

    @property
    def children(self) -> list["AsyncResult"]:
        return [AsyncResult(str(i), app=self.app) for i in rows.children_ids(self.app.chancy, self.id)]

    def as_tuple(self) -> tuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), None


class GroupResult:
    """The results of a group, in the order of its tasks."""

    def __init__(self, id: str | None = None, results: Sequence[AsyncResult] | None = None,
                 parent: Any = None, app: "Celery | None" = None, **kwargs: Any) -> None:
        self.id = id
        self.results = list(results or [])
        self.parent = parent
        self.app = app

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            disable_sync_subtasks: bool = True, **kwargs: Any) -> list[Any]:
        """Every task's value, in order (one timeout for the whole group)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=remaining, propagate=propagate, interval=interval,
                                     disable_sync_subtasks=disable_sync_subtasks))
        return values

    join = get

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None, **kwargs: Any) -> None:
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def save(self, backend: Any = None) -> "GroupResult":
        """Nothing to write: every member row already records its group and position."""
        return self

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: "Celery | None" = None) -> "GroupResult | None":
        """The group of that id, rebuilt from its members' rows (None if it has none)."""
        app = app or get_current_app()
        members = rows.group_member_ids(app.chancy, id)
        return cls(id, [AsyncResult(m, app=app) for m in members], app=app) if members else None

    def forget(self) -> None:
        for result in self.results:
            result.forget()


ResultSet = GroupResult


class EagerResult(AsyncResult):
    """The result of a task run in this process (``apply()``, ``task_always_eager``)."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,
                 name: str | None = None) -> None:
        self.id = str(id)
        self.app = None  # type: ignore[assignment]
        self.name = name
        self.parent = None
        self._value_ = ret_value
        self._state = state
        self._traceback = traceback

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    state = property(lambda self: self._state)
    status = state
    result = property(lambda self: self._value_)
    info = result
    traceback = property(lambda self: self._traceback)
    date_done = None

    def ready(self) -> bool:
        return True

    def get(self, timeout: float | None = None, propagate: bool = True, *args: Any, **kwargs: Any) -> Any:
        """The value at once; the other arguments of :meth:`AsyncResult.get` are about
        waiting, which an eager result never does."""
        if propagate and self._state in states.PROPAGATE_STATES:
            raise self._value_
        return self._value_

    wait = get

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    @property
    def children(self) -> list[AsyncResult]:
        return []
