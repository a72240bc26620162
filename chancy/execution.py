"""Running one job in the current process: find its function, call it, and describe what
happened as an :class:`Outcome`. Executors decide *where* this runs (event loop, thread,
child process) and enforce limits; the worker decides what an outcome does to the row."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib
import inspect
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from chancy import serialization
from chancy.serialization import storable_text
from chancy.errors import Fail, ResultNotStorableError, Retry, UnknownTaskError
from chancy.job import JobRecord

#: The job being run by the current task, for tasks that want their own id or attempt.
current_job: contextvars.ContextVar[JobRecord] = contextvars.ContextVar("chancy_current_job")

#: Every task defined in this process, by name. Module-level so that executor children
#: (which have no app object) resolve names the same way the parent does.
registry: dict[str, Callable[..., Any]] = {}

#: Hooks that wrap every task call, e.g. the Celery layer's signals and request context.
#: Each is ``hook(record, call) -> result`` where ``call()`` runs the task.
call_wrappers: list[Callable[[JobRecord, Callable[[], Any]], Any]] = []


@dataclasses.dataclass
class Outcome:
    """The result of one attempt, as reported by an executor to its worker."""

    job_id: uuid.UUID
    succeeded: bool
    result_json: str | None = None  # the return value, already serialised
    error: dict[str, Any] | None = None  # {type, message, traceback, at}
    retry_in: float | None = None  # the task asked to be retried after this many seconds
    max_attempts: int | None = None  # the task changed its attempt budget
    final: bool = False  # never retry (e.g. unknown task, cancelled)
    cancelled: bool = False

    @classmethod
    def success(cls, job_id: uuid.UUID, result: Any) -> "Outcome":
        try:
            return cls(job_id, True, result_json=serialization.dumps(result))
        except (TypeError, ValueError) as exc:
            error = ResultNotStorableError(
                f"The task returned a {type(result).__name__}, which cannot be stored as "
                f"JSON ({exc}); return plain data instead."
            )
            return cls.failure(job_id, error, final=True)

    @classmethod
    def failure(
        cls, job_id: uuid.UUID, exc: BaseException, *, final: bool = False, cancelled: bool = False
    ) -> "Outcome":
        return cls(job_id, False, error=describe_error(exc), final=final, cancelled=cancelled)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """A JSON-ready description of an exception, with its full traceback, storable
    whatever the exception's message holds (NUL, lone surrogates, a failing ``__str__``)."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        message = f"<{type(exc).__qualname__} whose str() failed>"
    return {
        "type": storable_text(f"{type(exc).__module__}.{type(exc).__qualname__}"),
        "message": storable_text(message),
        "traceback": storable_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))),
        "at": datetime.now(timezone.utc).isoformat(),
    }


def resolve(name: str) -> Callable[..., Any]:
    """The callable behind a task name: the registry first, else an import path
    (``pkg.module.func`` or ``pkg.module:func``)."""
    func = registry.get(name)
    if func is not None:
        return func
    module_name, sep, attr = name.partition(":")
    candidates = [(module_name, attr)] if sep else []
    parts = name.split(".")
    candidates += [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    for module_name, attr in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        func = registry.get(name)  # importing may have registered it under a custom name
        if func is not None:
            return func
        target: Any = module
        try:
            for piece in attr.split("."):
                target = getattr(target, piece)
        except AttributeError:
            continue
        if callable(target):
            return getattr(target, "func", target)
    raise UnknownTaskError(
        f"No task named {name!r} is known to this worker: it is neither registered nor "
        "importable. Deploy the code that defines it (and import it in the worker, e.g. "
        "with -A/--app), then retry the job."
    )


def _outcome_of(record: JobRecord, call: Callable[[], Any]) -> Outcome:
    try:
        return Outcome.success(record.id, call())
    except Retry as retry:
        outcome = Outcome.failure(record.id, retry.exc or retry)
        # A negative delay means "the backoff decides when".
        outcome.retry_in = retry.countdown if retry.countdown is not None else -1.0
        outcome.max_attempts = retry.max_attempts
        return outcome
    except UnknownTaskError as exc:
        return Outcome.failure(record.id, exc, final=True)
    except Fail as fail:
        return Outcome.failure(record.id, fail.exc, final=True)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, none escapes
        return Outcome.failure(record.id, exc)


def _wrapped(record: JobRecord, call: Callable[[], Any]) -> Callable[[], Any]:
    for wrapper in reversed(call_wrappers):
        call = (lambda w, c: lambda: w(record, c))(wrapper, call)
    return call


def run_sync(record: JobRecord) -> Outcome:
    """Run a job to completion in this thread (a coroutine function gets its own loop)."""

    def call() -> Any:
        func = resolve(record.func)
        result = func(*record.args, **record.kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return result

    token = current_job.set(record)
    try:
        return _outcome_of(record, _wrapped(record, call))
    finally:
        current_job.reset(token)


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def run_async(record: JobRecord) -> Outcome:
    """Run a job on the running event loop. Coroutine functions are awaited here; plain
    functions go to a thread so they cannot block the loop."""
    try:
        func = resolve(record.func)
    except UnknownTaskError as exc:
        return Outcome.failure(record.id, exc, final=True)
    if not inspect.iscoroutinefunction(func):
        return await asyncio.to_thread(contextvars.copy_context().run, run_sync, record)
    token = current_job.set(record)
    try:
        try:
            result = await func(*record.args, **record.kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001
            return _outcome_of(record, _raiser(exc))
        return Outcome.success(record.id, result)
    finally:
        current_job.reset(token)


def _raiser(exc: BaseException) -> Callable[[], Any]:
    def call() -> Any:
        raise exc

    return call
