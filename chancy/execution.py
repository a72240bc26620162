"""Running one job in the current process: find its function, call it, and describe what
happened as an :class:`Outcome`. Executors decide *where* this runs (event loop, thread,
child process) and enforce limits; the worker decides what an outcome does to the row."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import importlib
import inspect
import os
import re
import logging
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from chancy import serialization
from chancy.serialization import storable_text
from chancy.errors import ConfigurationError, Fail, ResultNotStorableError, Retry, UnknownTaskError
from chancy.job import JobRecord

log = logging.getLogger("chancy.execution")

#: The job being run by the current task, for tasks that want their own id or attempt.
current_job: contextvars.ContextVar[JobRecord] = contextvars.ContextVar("chancy_current_job")

#: Every task defined in this process, by name. Module-level so that executor children
#: (which have no app object) resolve names the same way the parent does.
registry: dict[str, Callable[..., Any]] = {}

#: The environment variable listing, comma-separated, more allowed import prefixes.
ALLOWED_IMPORTS_ENV = "CHANCY_ALLOWED_IMPORTS"
#: Module prefixes whose functions may run by import path without being registered (see
#: :func:`allow_imports`), sorted. Per process, like the registry.
_granted: tuple[str, ...] = ()
#: Functions found by import path, by name and the allowed prefixes they were found under.
_imported: dict[tuple[str, tuple[str, ...]], Callable[..., Any]] = {}
_MODULE_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

#: What an observer returns when a job starts: called with the job's outcome when it ends.
Finish = Callable[["Outcome"], None]
#: Observers of every job this process runs, e.g. :func:`chancy.observability.otel.instrument`'s
#: consumer spans. Each is ``observer(record) -> finish``, called where the task runs (a
#: process-pool child too) and in its context, just before the call; ``finish(outcome)``
#: just after, in the same context. Per process, like :data:`registry`: an executor runs a
#: record without its app, so an app installs its observers from the module that builds it,
#: which process-pool children import too. Empty (the default), a job pays one truth test.
run_observers: list[Callable[[JobRecord], Finish]] = []


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


def allow_imports(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Let this process run, by import path, the functions defined under these module
    prefixes (``"myproj.jobs"`` covers ``myproj.jobs.send`` and ``myproj.jobs.mail.send``,
    not ``myproj.jobsx``); returns them, checked. Off by default, because a job's task
    name comes from whoever can write to the queue: without it a worker runs only
    registered tasks, as Celery does."""
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    checked = tuple(_checked_prefix(prefix) for prefix in prefixes)
    global _granted
    _granted = tuple(sorted({*_granted, *checked}))
    return checked


def allowed_imports() -> tuple[str, ...]:
    """Every prefix allowed in this process: granted by :func:`allow_imports` (e.g. by
    ``Chancy(allowed_imports=…)`` or ``chancy worker --allow-import``) or listed,
    comma-separated, in ``CHANCY_ALLOWED_IMPORTS``."""
    return _all_allowed(_granted, os.environ.get(ALLOWED_IMPORTS_ENV, ""))


@functools.lru_cache(maxsize=16)  # asked once per job run by import path
def _all_allowed(granted: tuple[str, ...], listed: str) -> tuple[str, ...]:
    from_env = {_checked_prefix(prefix, ALLOWED_IMPORTS_ENV) for prefix in listed.replace(",", " ").split()}
    return tuple(sorted({*granted, *from_env}))


def _checked_prefix(prefix: str, source: str = "allowed_imports") -> str:
    if not _MODULE_PREFIX.fullmatch(prefix):
        raise ConfigurationError(f"{source}: {prefix!r} is not a module prefix; give dotted module "
                                 "names such as 'myproj.jobs'")
    return prefix


def _under(module_name: str | None, prefixes: tuple[str, ...]) -> bool:
    if not module_name:
        return False
    return any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in prefixes)


def resolve(name: str) -> Callable[..., Any]:
    """The callable behind a task name: a registered task, else a function defined under
    an allowed import prefix, by its path (``pkg.module.func`` or ``pkg.module:func``).

    Importing a module runs its code, so no module outside the allowed prefixes is ever
    imported; and what the path reaches must itself be defined under them, so that
    ``myproj.jobs.os.system`` does not reach ``os.system`` through an allowed module."""
    func = registry.get(name)
    if func is not None:
        return func
    allowed = allowed_imports()
    func = _imported.get((name, allowed))
    if func is None:
        func = _imported[(name, allowed)] = _find_by_import_path(name, allowed)
    return func


def _find_by_import_path(name: str, allowed: tuple[str, ...]) -> Callable[..., Any]:
    for module_name, path in _import_candidates(name):
        if _under(module_name, allowed):
            func = _import_task(name, module_name, path, allowed)
            if func is not None:
                return func
    raise UnknownTaskError(_unknown_task_message(name, allowed))


def _import_candidates(name: str) -> list[tuple[str, str]]:
    """Each (module, attribute path) split of ``name``, the longest module first."""
    module_name, colon, path = name.partition(":")
    candidates = [(module_name, path)] if colon else []
    parts = name.split(".")
    return candidates + [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]


def _import_task(name: str, module_name: str, path: str, allowed: tuple[str, ...]) -> Callable[..., Any] | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    func = registry.get(name)  # importing it may have registered the task
    if func is not None:
        return func
    target: Any = module
    for piece in path.split("."):
        if piece.startswith("__"):  # no way into __globals__, __class__, __builtins__…
            return None
        target = getattr(target, piece, None)
    if callable(target) and _under(getattr(target, "__module__", None), allowed):
        return target
    return None


def _unknown_task_message(name: str, allowed: tuple[str, ...]) -> str:
    state = f"neither registered nor defined under the allowed imports ({', '.join(allowed)})" \
        if allowed else "not registered"
    return (
        f"No task named {name!r} is known to this worker: it is {state}. A worker "
        "runs only the tasks its app registers (@app.task, @shared_task) in the modules it loads "
        "(-A and what that imports). Register the task there, or, for a plain function of your "
        "own, allow its module: Chancy(allowed_imports=['myproj.jobs']), CHANCY_ALLOWED_IMPORTS "
        "or `chancy worker --allow-import myproj.jobs`. Then deploy and retry the job."
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


def _begin(record: JobRecord) -> list[Finish]:
    """Tell every observer that ``record`` starts; an observer that fails is logged and
    left out, never failing the job."""
    finishes = []
    for observer in run_observers:
        try:
            finishes.append(observer(record))
        except Exception:  # noqa: BLE001
            log.exception("run observer %r failed as job %s started", observer, record.id)
    return finishes


def _end(finishes: list[Finish], outcome: Outcome) -> Outcome:
    """Tell the observers that began a job its outcome, the last one first (so nested
    contexts unwind in order); returns the outcome."""
    for finish in reversed(finishes):
        try:
            finish(outcome)
        except Exception:  # noqa: BLE001
            log.exception("run observer %r failed as job %s ended", finish, outcome.job_id)
    return outcome


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
        if not run_observers:
            return _outcome_of(record, call)
        finishes = _begin(record)
        return _end(finishes, _outcome_of(record, call))
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
        outcome = Outcome.failure(record.id, exc, final=True)
        return _end(_begin(record), outcome) if run_observers else outcome
    if not inspect.iscoroutinefunction(func):
        return await asyncio.to_thread(contextvars.copy_context().run, run_sync, record)
    token = current_job.set(record)
    try:
        finishes = _begin(record) if run_observers else None
        try:
            result = await func(*record.args, **record.kwargs)
        except asyncio.CancelledError:
            if finishes:
                _end(finishes, Outcome.failure(record.id, asyncio.CancelledError(), cancelled=True))
            raise
        except BaseException as exc:  # noqa: BLE001
            outcome = _outcome_of(record, _raiser(exc))
        else:
            outcome = Outcome.success(record.id, result)
        return _end(finishes, outcome) if finishes else outcome
    finally:
        current_job.reset(token)


def _raiser(exc: BaseException) -> Callable[[], Any]:
    def call() -> Any:
        raise exc

    return call
