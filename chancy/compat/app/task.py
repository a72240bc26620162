"""Celery's ``Task``: calling (``delay``/``apply_async``/``apply``/inline), ``self.request``,
``retry`` and autoretry, the handler hooks and signals. A Celery task is registered in
:data:`chancy.execution.registry` under its Celery name; the core worker runs it through
:meth:`Task.run_from_worker`, which builds ``self.request`` from the job row."""

from __future__ import annotations

import inspect
import logging
import math
import socket
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, ParamSpec, Sequence, TypeVar

import chancy.compat.payload as payload
import chancy.compat.rows as rows
import chancy.compat.signals as signals
import chancy.compat.states as states
from chancy import serialization
from chancy.compat.canvas import Signature, chunks, xmap, xstarmap
from chancy.compat.exceptions import Ignore, MaxRetriesExceededError, Reject, Retry, exception_info
from chancy.compat.local import request_of, running
from chancy.compat.protocol import celery_retries, job_id_for
from chancy.compat.replace import replace_running
from chancy.compat.result import AsyncResult, EagerResult, exception_from_error
from chancy.compat.soft_limit import soft_time_limit
from chancy.errors import Fail, JobCancelledError, JobTimeoutError
from chancy.execution import current_job
from chancy.executors.process import child_init_hooks
from chancy.job import Jitter, JobRecord, backoff_delay

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery

log = logging.getLogger("chancy.compat.task")

P = ParamSpec("P")
R = TypeVar("R")

#: Attempt budget standing for Celery's ``max_retries=None`` (retry forever).
UNLIMITED_ATTEMPTS = 2**31 - 1


class Context:
    """``self.request``: what Celery tells a running task about its own call. Every field of
    Celery's ``Context`` exists with Celery's default, so code reading any of them works
    outside a worker too; a worker fills them from the job row (:meth:`from_record`)."""

    args: Any = None
    callbacks: Any = None
    called_directly = True
    chain: Any = None
    chord: Any = None
    correlation_id: str | None = None
    delivery_info: dict[str, Any] | None = None
    errbacks: Any = None
    eta: str | None = None
    expires: str | None = None
    group: str | None = None
    group_index: int | None = None
    headers: dict[str, Any] | None = None
    hostname: str | None = None
    id: str | None = None
    ignore_result = False
    is_eager = False
    kwargs: Any = None
    logfile: str | None = None
    loglevel: int | None = None
    origin: str | None = None
    parent_id: str | None = None
    properties: dict[str, Any] | None = None
    retries = 0
    reply_to: str | None = None
    replaced_task_nesting = 0
    root_id: str | None = None
    shadow: str | None = None
    taskset: str | None = None  # Celery's old name of ``group``
    timelimit: Any = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    utc: bool | None = None
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] | None = None
    task: str | None = None
    _children: list[Any] | None = None

    def __init__(self, **fields: Any) -> None:
        self.update(**fields)

    def update(self, **fields: Any) -> None:
        """Set fields; a ``timelimit`` also sets ``time_limit`` and ``soft_time_limit``."""
        self.__dict__.update(fields)
        if "timelimit" in fields:
            limits = fields["timelimit"]
            self.time_limit, self.soft_time_limit = (
                (limits[0], limits[1]) if isinstance(limits, (list, tuple)) and len(limits) >= 2 else (None, None))

    def clear(self) -> None:
        self.__dict__.clear()

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    @property
    def children(self) -> list[Any]:
        if self._children is None:
            self._children = []
        return self._children

    @classmethod
    def from_record(cls, record: JobRecord) -> "Context":
        """The request a Celery worker would build from this job's message: its headers
        (custom ones also as attributes, as Celery copies every header), properties and
        delivery info."""
        celery = record.meta.get("celery", {})
        task_id = celery.get("task_id") or str(record.id)
        priority = record.priority
        custom = dict(celery.get("headers") or {})
        properties = {"correlation_id": task_id, "reply_to": celery.get("reply_to"), "delivery_mode": 2,
                      "delivery_info": {"exchange": "", "routing_key": record.queue}, "priority": priority,
                      "body_encoding": "base64", "delivery_tag": f"{record.id}/{record.attempts}",
                      **(celery.get("properties") or {})}
        request = cls(**{k: v for k, v in custom.items() if k.isidentifier() and k not in _CONTEXT_FIELDS})
        request.update(
            id=task_id, task=record.func, args=list(record.args), kwargs=dict(record.kwargs), lang="py",
            retries=celery_retries(record), is_eager=False, called_directly=False, hostname=record.taken_by,
            delivery_info={"exchange": "", "routing_key": record.queue, "priority": priority,
                           "redelivered": record.attempts > 1},
            properties=properties, headers=custom or None,
            root_id=celery.get("root_id") or task_id, parent_id=celery.get("parent_id"),
            group=celery.get("group"), group_index=celery.get("group_index"),
            eta=record.scheduled_at.isoformat() if celery.get("eta") and record.scheduled_at else None,
            expires=record.expires_at.isoformat() if record.expires_at else None,
            timelimit=list(celery.get("timelimit") or (None, None)),
            correlation_id=celery.get("correlation_id") or task_id, reply_to=celery.get("reply_to"),
            origin=celery.get("origin"), shadow=celery.get("shadow"),
            ignore_result=bool(celery.get("ignore_result")),
            replaced_task_nesting=int(celery.get("replaced_task_nesting") or 0),
            stamped_headers=celery.get("stamped_headers"), stamps=celery.get("stamps"),
            argsrepr=celery.get("argsrepr") or repr(tuple(record.args)),
            kwargsrepr=celery.get("kwargsrepr") or repr(dict(record.kwargs)),
            callbacks=celery.get("callbacks"), errbacks=celery.get("errbacks"),
            chain=celery.get("chain"), chord=celery.get("chord"),
        )
        return request


#: Names a custom header must not shadow when it is copied onto the request.
_CONTEXT_FIELDS = frozenset(k for k in vars(Context) if not k.startswith("__")) | {"lang", "argsrepr", "kwargsrepr"}


def _positional_range(signature: inspect.Signature | None) -> tuple[float, float]:
    """The fewest and most positional arguments that bind to ``signature`` without keyword
    arguments; an empty range when a keyword-only parameter has no default."""
    if signature is None:
        return (1, 0)
    params = signature.parameters.values()
    kind = inspect.Parameter
    if any(p.kind is kind.KEYWORD_ONLY and p.default is kind.empty for p in params):
        return (1, 0)
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    most = math.inf if any(p.kind is kind.VAR_POSITIONAL for p in params) else len(positional)
    return (sum(p.default is kind.empty for p in positional), most)


def exponential_backoff(factor: int, retries: int, maximum: int, full_jitter: bool) -> int:
    """Celery's autoretry countdown: ``min(maximum, factor * 2**retries)``, then uniformly
    drawn from ``0..countdown`` with full jitter."""
    return int(backoff_delay(retries + 1, base=factor, factor=2, maximum=maximum,
                             jitter=Jitter.FULL if full_jitter else Jitter.NONE))


class Task(Generic[P, R]):
    """Base class of every Celery-style task (``@app.task(base=MyTask)`` subclasses it).
    ``@app.task`` gives a ``Task[P, R]`` of the function's parameters and return type, so
    a type checker reports a wrong argument to ``delay``, ``si`` or a direct call."""

    name: str | None = None
    app: "Celery | None" = None
    typing = True
    max_retries: int | None = 3
    default_retry_delay = 3 * 60
    rate_limit: str | None = None
    ignore_result: bool | None = None
    track_started: bool | None = None
    acks_late: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    serializer: str | None = None
    expires: float | datetime | None = None
    priority: int | None = None
    queue: str | None = None
    throws: tuple[type[BaseException], ...] = ()
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = {}
    retry_backoff: bool | int = False
    retry_backoff_max = 600
    retry_jitter = True
    store_errors_even_if_ignored = False
    abstract = False
    #: Signature checking uses this function (the undecorated one).
    __wrapped__: Callable[..., Any] | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"Task {self.name!r} defines no run()")

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main if self.app else None}>"

    # --- the request ---------------------------------------------------------------------
    @property
    def request(self) -> Context:
        return request_of(self) or Context()

    # --- calling -------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run inline, in this process, like calling the function."""
        with running(self, Context(args=args, kwargs=kwargs, called_directly=True, task=self.name,
                                    delivery_info={})):
            return self.run(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult":
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    task_id: str | None = None, producer: Any = None, link: Any = None,
                    link_error: Any = None, shadow: str | None = None, **options: Any) -> Any:
        """Enqueue a call (see the Celery docs for the options). ``connection=`` (a psycopg
        connection) enqueues in the caller's open transaction; inside a Django atomic block
        the job joins Django's transaction by itself."""
        self._check_app()
        if link is not None:
            options["link"] = link
        if link_error is not None:
            options["link_error"] = link_error
        if shadow is not None:
            options["shadow"] = shadow
        if task_id is not None:
            options["task_id"] = task_id
        connection = options.pop("connection", None)
        on_commit = bool(options.pop("on_commit", False))
        return self.signature(args, kwargs, **options).send(connection=connection, on_commit=on_commit)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> "AsyncResult":
        """Enqueue once the surrounding transaction commits (Django's, when in one).
        Unlike Celery's, it returns the result handle: the id is chosen now."""
        return self.signature(args, kwargs).apply_async(on_commit=True)

    def apply_async_on_commit(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                              **options: Any) -> "AsyncResult":
        return self.signature(args, kwargs, **options).apply_async(on_commit=True)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              task_id: str | None = None, throw: bool | None = None, retries: int = 0,
              **options: Any) -> "EagerResult":
        """Run now, in this process, with a request like a worker's; returns an EagerResult.
        Arguments round-trip through the serializer as they would through the queue."""
        self._check_app()
        assert self.app is not None
        args = tuple(serialization.loads(serialization.dumps(list(args or ()))))
        kwargs = dict(serialization.loads(serialization.dumps(dict(kwargs or {}))))
        self.check_arguments(args, kwargs)
        task_id = task_id or str(uuid.uuid4())
        throw = self.app.conf.task_eager_propagates if throw is None else throw
        while True:
            request = Context(id=task_id, args=args, kwargs=kwargs, retries=retries, is_eager=True,
                              called_directly=False, task=self.name, root_id=options.get("root_id", task_id),
                              parent_id=options.get("parent_id"), headers=options.get("headers"),
                              hostname=socket.gethostname(), properties=options, timelimit=[None, None],
                              ignore_result=bool(options.get("ignore_result", False)),
                              replaced_task_nesting=int(options.get("replaced_task_nesting") or 0),
                              delivery_info={"is_eager": True, "exchange": None,
                                             "routing_key": options.get("queue"),
                                             "priority": options.get("priority")})
            try:
                retval = self._execute(request, args, kwargs)
            except Retry:
                retries += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - reported as the result
                failure = exc.exc if isinstance(exc, Fail) else exc
            else:
                return EagerResult(task_id, serialization.loads(serialization.dumps(retval)), states.SUCCESS,
                                   name=self.name)
            # Raised here, not in the except clause: there, Python would make our Fail
            # wrapper the context of the task's exception, replacing its own.
            if throw:
                raise failure
            return EagerResult(task_id, failure, states.FAILURE, name=self.name)

    # --- signatures ----------------------------------------------------------------------
    def signature(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                  **options: Any) -> "Signature":
        return Signature(self.name, args, kwargs, options, app=self.app)

    subtask = signature

    # ``s`` stays untyped: a partial signature (``add.s(2)`` in a chain) is completed later.
    def s(self, *args: Any, **kwargs: Any) -> "Signature":
        return self.signature(args, kwargs)

    def si(self, *args: P.args, **kwargs: P.kwargs) -> "Signature":
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> "Signature":
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Any) -> "Signature":
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Any, n: int) -> "Signature":
        return chunks(self.s(), it, n, app=self.app)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> "AsyncResult":  # noqa: N802 - Celery's name
        return AsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    # --- arguments ---------------------------------------------------------------------------
    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Fail at call time, as Celery does, when the arguments cannot bind to ``run``."""
        if not self.typing:
            return
        signature, positional = self._run_signature()
        if signature is None:  # no introspectable signature (a builtin): nothing to check
            return
        if not kwargs and positional[0] <= len(args) <= positional[1]:
            return  # what binding would accept, without binding (a third of job_for's cost)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() called with wrong arguments: {exc}") from None

    def _run_signature(self) -> tuple[inspect.Signature | None, tuple[float, float]]:
        """``run``'s signature, inspected once per ``run`` (inspecting costs more than
        the rest of a ``.delay()``'s Python work), and how many positional arguments alone
        bind to it (none at all when a keyword-only parameter is required)."""
        run = self.run
        key = getattr(run, "__func__", run)
        cached = self.__dict__.get("_signature_of_run")
        if cached is None or cached[0] is not key:
            try:
                signature = inspect.signature(run)
            except ValueError:
                signature = None
            cached = self.__dict__["_signature_of_run"] = (key, signature, _positional_range(signature))
        return cached[1], cached[2]

    # --- retrying ------------------------------------------------------------------------------
    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Run this same task id again later: raises :class:`Retry` (returns it with
        ``throw=False``). Past ``max_retries``: re-raises ``exc``, else
        :class:`MaxRetriesExceededError`."""
        request = self.request
        if args is not None or kwargs is not None:
            if tuple(args if args is not None else request.args) != tuple(request.args) or \
                    dict(kwargs if kwargs is not None else request.kwargs) != dict(request.kwargs):
                raise ValueError(
                    f"{self.name}: retry() with different args/kwargs is not supported (the retry "
                    "re-runs the same job row); call self.apply_async(new_args) and return instead")
        if request.called_directly:
            raise exc or Retry("Task can be retried", None)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} kwargs:{request.kwargs}",
                task_args=request.args, task_kwargs=request.kwargs)
        if countdown is None and eta is not None:
            countdown = max(0.0, (eta - datetime.now(timezone.utc)).total_seconds())
        if countdown is None:
            countdown = self.default_retry_delay
        max_attempts = UNLIMITED_ATTEMPTS if limit is None else limit + 1
        retry = Retry(exc=exc, when=eta or countdown, is_eager=request.is_eager,
                      countdown=countdown, max_attempts=max_attempts)
        if throw:
            raise retry
        return retry

    # --- replacing -------------------------------------------------------------------------------
    def replace(self, sig: "Signature") -> Any:
        """Hand this task's place in its workflow to ``sig`` (a task, chain, group or chord):
        its result becomes this task's, and the chain, chord or group around it goes on
        (see :mod:`chancy.compat.replace`). On a worker it raises :class:`Ignore`, as
        Celery does; run eagerly or inline, it runs ``sig`` now and returns its value."""
        request = self.request
        if request.is_eager or request.called_directly:
            return sig.apply().get()
        replace_running(self, request, sig)
        raise Ignore("Replaced by new task")

    # --- handlers (override in a base class) -----------------------------------------------
    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called when the task succeeded."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called when the task is to be retried."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called when the task failed."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called after the task returned, whatever happened."""

    # --- state ---------------------------------------------------------------------------------
    def update_state(self, task_id: str | None = None, state: str | None = None, meta: Any = None,
                     **kwargs: Any) -> None:
        """Record a custom state (e.g. ``PROGRESS``) and its ``meta`` on the running job."""
        request = self.request
        task_id = task_id or request.id
        if task_id is None:
            raise ValueError("update_state() outside a task needs task_id=")
        if request.is_eager:
            return
        assert self.app is not None
        rows.set_custom_state(self.app.chancy, task_id, state, meta)

    # --- running in a worker ---------------------------------------------------------------------
    def run_from_worker(self, *args: Any, **kwargs: Any) -> Any:
        """What the core worker calls: builds ``self.request`` from the job row."""
        record = current_job.get()
        if record.meta.get("celery", {}).get("replaced"):
            return args[0] if args else None  # its replacement ran: pass its result on
        request = Context.from_record(record)
        encoded = record.meta.get("celery", {}).get("payload")
        if encoded:
            assert self.app is not None
            try:
                more_args, more_kwargs = payload.decode(encoded, self.app.conf.accept_content)
            except Exception as exc:  # noqa: BLE001 - refused content fails the job for good
                raise Fail(exc) from None
            args, kwargs = tuple(args) + tuple(more_args), {**kwargs, **more_kwargs}
            request.args, request.kwargs = args, kwargs
        if record.meta.get("canvas", {}).get("errback") and args and self._takes_failure_details():
            args = self._failure_details(str(args[0])) + tuple(args[1:])
        try:
            return self._execute(request, args, kwargs)
        except (Retry, Fail, JobCancelledError, JobTimeoutError):
            raise  # the executor reports cancels and timeouts itself
        except BaseException as exc:  # noqa: BLE001 - failures are final unless retried
            raise Fail(exc) from exc

    def _takes_failure_details(self) -> bool:
        """Celery calls an errback whose function takes more than one positional argument
        as ``errback(request, exc, traceback)``; others get the failed task's id."""
        try:
            params = inspect.signature(self.run).parameters.values()
        except (TypeError, ValueError):
            return False
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return len(positional) > 1 or any(p.kind is p.VAR_POSITIONAL for p in params)

    def _failure_details(self, failed_id: str) -> tuple[Context, BaseException, str | None]:
        assert self.app is not None
        failed = self.app.chancy.get_job_sync(job_id_for(failed_id))
        if failed is None:
            raise LookupError(f"errback {self.name}: the failed task {failed_id} no longer exists")
        error = failed.errors[-1] if failed.errors else None
        return Context.from_record(failed), exception_from_error(error), error.get("traceback") if error else None

    def _execute(self, request: Context, args: tuple, kwargs: dict) -> Any:
        """Run with hooks and signals; a failure is raised wrapped in :class:`Fail`."""
        task_id = request.id
        assert task_id is not None  # a worker's request (from its row) or apply()'s: both have one
        with running(self, request):
            signals.task_prerun.send(sender=self, task_id=task_id, task=self, args=args, kwargs=kwargs)
            status, retval, einfo = states.SUCCESS, None, None
            try:
                self.before_start(task_id, args, kwargs)
                with soft_time_limit(None if request.is_eager else request.timelimit[1]):
                    retval = self._run_with_autoretry(args, kwargs)
            except Retry as retry:
                status, retval, einfo = states.RETRY, retry, exception_info()
                self.on_retry(retry.exc or retry, task_id, args, kwargs, einfo)
                signals.task_retry.send(sender=self, request=request, reason=retry.exc or retry, einfo=einfo)
                raise
            except Ignore:
                status, retval = states.IGNORED, None
            except Reject as reject:
                status, retval = states.REJECTED, reject
                signals.task_rejected.send(sender=self, message=None, exc=reject)
                if reject.requeue:
                    raise Retry(exc=reject, countdown=0, max_attempts=request.retries + 2) from None
                raise Fail(reject) from None
            except BaseException as exc:
                status, retval, einfo = states.FAILURE, exc, exception_info()
                if not isinstance(exc, self.throws):
                    log.debug("task %s[%s] raised %r", self.name, task_id, exc)
                self.on_failure(exc, task_id, args, kwargs, einfo)
                signals.task_failure.send(sender=self, task_id=task_id, exception=exc, args=args,
                                          kwargs=kwargs, traceback=exc.__traceback__, einfo=einfo)
                raise Fail(exc) from exc
            else:
                self.on_success(retval, task_id, args, kwargs)
                signals.task_success.send(sender=self, result=retval)
            finally:
                self.after_return(status, retval, task_id, args, kwargs, einfo)
                signals.task_postrun.send(sender=self, task_id=task_id, task=self, args=args, kwargs=kwargs,
                                          retval=retval, state=status)
            return retval

    def _run_with_autoretry(self, args: tuple, kwargs: dict) -> Any:
        if not self.autoretry_for:
            return self.run(*args, **kwargs)
        try:
            return self.run(*args, **kwargs)
        except Retry:
            raise
        except self.autoretry_for as exc:
            if self.dont_autoretry_for and isinstance(exc, self.dont_autoretry_for):
                raise
            retry_kwargs = dict(self.retry_kwargs or {})
            if self.retry_backoff:
                retry_kwargs["countdown"] = exponential_backoff(
                    factor=int(max(1.0, float(self.retry_backoff))), retries=self.request.retries,
                    maximum=self.retry_backoff_max, full_jitter=self.retry_jitter)
            raise self.retry(exc=exc, **retry_kwargs) from None

    def _check_app(self) -> None:
        if self.app is None:
            raise RuntimeError(f"Task {self.name!r} is not bound to an app (define it with @app.task or "
                               "@shared_task and create a chancy.compat.Celery app)")


def _send_worker_process_init() -> None:
    """Celery sends ``worker_process_init`` in each pool process once the app is loaded;
    a process-pool child sends it at the same point."""
    signals.worker_process_init.send(sender=None)


child_init_hooks.append(_send_worker_process_init)
