"""``@chancy.task``: a plain function plus the job defaults it is pushed with."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, ParamSpec, Sequence, TypeVar

from chancy import execution, rate_limits
from chancy.concurrency import ConcurrencyKey, KeyRule
from chancy.job import Backoff, Job, Limit, Reference, task_name

if TYPE_CHECKING:
    from chancy.app import Chancy

P = ParamSpec("P")
R = TypeVar("R")


def _default_name(func: Callable[..., Any]) -> str:
    """``module.qualname``; a function defined inside another one (a test, a factory) is
    named ``module.name`` like Celery does: the registry finds it, not an import."""
    if "<" in getattr(func, "__qualname__", "<"):
        return f"{func.__module__}.{func.__name__}"
    return task_name(func)


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function inline; :meth:`job` builds a
    :class:`Job` with this task's defaults; :meth:`push` enqueues one."""

    def __init__(
        self,
        app: "Chancy",
        func: Callable[P, R],
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        limits: Sequence[Limit] = (),
        backoff: Backoff | None = None,
        meta: Mapping[str, Any] | None = None,
        rate_limit: rate_limits.RateLimitLike = None,
        concurrency_key: KeyRule | None = None,
        concurrency: int | None = None,
    ) -> None:
        """``rate_limit`` (e.g. ``"10/m"``): at most that many starts of this task across
        the cluster; see :mod:`chancy.rate_limits`. ``concurrency_key`` (an argument's
        name, or a function of the arguments returning a string) and ``concurrency``
        (default 1): at most that many jobs of the queue with one key run at once, across
        the cluster; see :mod:`chancy.concurrency`."""
        self.app = app
        self.func = func
        self.name = name or _default_name(func)
        # Building one job validates every default now, at decoration time.
        self.defaults = Job(
            self.name, queue=queue, priority=priority, max_attempts=max_attempts,
            limits=limits, backoff=backoff, meta=meta,
        )
        self.rate_limit = rate_limits.parse(rate_limit)
        if concurrency_key is None and concurrency is not None:
            raise ValueError(f"task {self.name!r}: concurrency limits the running jobs of one "
                             "concurrency_key; give the key too")
        self.concurrency = None if concurrency_key is None else ConcurrencyKey(
            self.name, func, concurrency_key, concurrency)
        functools.update_wrapper(self, func)
        execution.registry[self.name] = func
        app.tasks[self.name] = self
        rate_limits.declare(self.name, self.rate_limit)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    # The function's parameters (``P``) type the calls below, so a type checker reports a
    # wrong argument where the job is pushed rather than a worker when it runs.
    def job(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """A job running this task with these arguments and the task's defaults."""
        return self._job(args, kwargs)

    def _job(self, args: tuple, kwargs: dict[str, Any]) -> Job:
        job = self.defaults.with_arguments(args, kwargs)
        if self.concurrency is not None:  # the key of this call (a bad one fails the push)
            job.__dict__.update(self.concurrency.options(args, kwargs))
        return job

    async def push(self, *args: P.args, **kwargs: P.kwargs) -> Reference:
        return await self.app.push(self.job(*args, **kwargs))

    def push_sync(self, *args: P.args, **kwargs: P.kwargs) -> Reference:
        return self.app.push_sync(self.job(*args, **kwargs))

    async def push_many(self, calls: Iterable[Sequence[Any]], connection: Any = None) -> list[Reference]:
        """Push one job per item of ``calls``, each the positional arguments of one call
        (as ``starmap``), with this task's defaults. Many calls are copied in one COPY
        without a :class:`Job` per call: the bulk API, several times cheaper per job than
        ``app.push_many([task.job(...) ...])``. With ``connection``, in the caller's
        transaction."""
        calls = list(calls)
        if self.concurrency is not None:  # a key per call: no one template to copy
            return await self.app.push_many([self._job(tuple(call), {}) for call in calls], connection)
        queue = self.app.queue(self.defaults.queue)
        return [Reference(self.app, job_id, queue.name)
                for job_id in await queue.push_calls(self.defaults, calls, connection)]

    def push_many_sync(self, calls: Iterable[Sequence[Any]], connection: Any = None) -> list[Reference]:
        calls = list(calls)
        if self.concurrency is not None:
            return self.app.push_many_sync([self._job(tuple(call), {}) for call in calls], connection)
        queue = self.app.queue(self.defaults.queue)
        return [Reference(self.app, job_id, queue.name)
                for job_id in queue.push_calls_sync(self.defaults, calls, connection)]
