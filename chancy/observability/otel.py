"""OpenTelemetry for Chancy (``pip install "chancy[otel]"``): a PRODUCER span per push and a
CONSUMER span per run, linked through the job row, and worker metrics, all through the
OpenTelemetry API (your SDK setup decides where they go). Off until :func:`instrument`.

- **Push.** ``app.push`` / ``push_sync`` / ``push_many`` (and a ``chancy.compat`` task's
  ``.delay()``, which pushes through them) open a ``push <task>`` span and store its W3C
  trace context (``traceparent``, ``tracestate``) in each job's ``meta["otel"]``. The bulk
  ``Task.push_many`` (COPY) is not spanned.
- **Run.** Where the task runs (the event loop, a thread or a process-pool child), a
  ``run <task>`` span is current around the call, its parent the push's span: spans the
  task opens, and log records, belong to the job's trace. It ends with the outcome.
- **Metrics**, counted by the worker process as it writes outcomes (every pool):
  ``chancy.job.runs`` and ``chancy.job.failures`` (counters), ``chancy.job.duration`` and
  ``chancy.job.queue_lag`` (histograms, seconds).

Attributes follow the messaging semantic conventions (``messaging.system="chancy"``,
``messaging.operation.type``, ``messaging.destination.name`` = the queue,
``messaging.message.id`` = the job id) plus ``chancy.task.name``, ``chancy.job.attempt``
and ``chancy.job.outcome``.

Celery-compat jobs: ``chancy.compat`` fires Celery's signals, so OpenTelemetry's Celery
instrumentor, when on, already spans them (``apply_async/<task>``, ``run/<task>``). Then
(checked where each push or run happens) this module leaves jobs carrying Celery metadata
to it and only counts their metrics; with the Celery instrumentor off, it spans them too.

Process-pool children import the module that builds the app: call :func:`instrument` and
set your SDK up there, at module level, so each child traces with its own exporter."""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from typing import Any, Callable, Iterator, Mapping, Sequence

from opentelemetry import context, metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from chancy import execution
from chancy.app import Chancy
from chancy.execution import Finish, Outcome
from chancy.job import Job, JobRecord, Reference
from chancy.observability import attempts

log = logging.getLogger("chancy.observability")

#: The key of a job's meta that carries the trace context of its push.
CARRIER = "otel"
SYSTEM = "chancy"
SCOPE = "chancy"


@functools.lru_cache(maxsize=1)
def _celery_instrumentor() -> Any:
    """OpenTelemetry's Celery instrumentor (a singleton), or None where it is not installed."""
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
    except ImportError:
        return None
    return CeleryInstrumentor()


def _left_to_celery(meta: Mapping[str, Any]) -> bool:
    """Whether a job is a Celery-compat one that Celery's own instrumentor spans here."""
    if "celery" not in meta:
        return False
    instrumentor = _celery_instrumentor()
    return instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry


def _parent_context(meta: Mapping[str, Any]) -> context.Context | None:
    """The push's context stored in ``meta``, or None when there is none or it is not a
    mapping of strings (a row written by hand): the run span then starts a trace."""
    carrier = meta.get(CARRIER)
    if not isinstance(carrier, Mapping):
        return None
    carrier = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
    try:
        return propagate.extract(carrier)
    except Exception:  # noqa: BLE001 - a propagator choking on a hostile value starts a new trace
        log.debug("unreadable trace context %r", carrier, exc_info=True)
        return None


def outcome_name(outcome: Outcome) -> str:
    """``succeeded``, ``retry`` (the task asked), ``cancelled`` or ``failed`` (the worker
    may still retry a failed attempt, by its attempt budget)."""
    if outcome.succeeded:
        return "succeeded"
    if outcome.cancelled:
        return "cancelled"
    if outcome.retry_in is not None:
        return "retry"
    return "failed"


class Instrumentation:
    """What :func:`instrument` installed for one app; :meth:`uninstrument` takes it away."""

    def __init__(self, app: Chancy, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self._runs = meter.create_counter("chancy.job.runs", unit="{run}",
                                          description="Attempts finished by workers, by queue, task and outcome.")
        self._failures = meter.create_counter("chancy.job.failures", unit="{run}",
                                              description="Attempts that failed (retried or not), by queue and task.")
        self._duration = meter.create_histogram("chancy.job.duration", unit="s",
                                                description="Run time of each attempt.",
                                                explicit_bucket_boundaries_advisory=list(attempts.BUCKETS))
        self._lag = meter.create_histogram("chancy.job.queue_lag", unit="s",
                                           description="Time from due to started of each attempt.",
                                           explicit_bucket_boundaries_advisory=list(attempts.BUCKETS))
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        self._wrap_pushes()
        execution.run_observers.append(self.observe_run)
        self._undo.append(lambda: execution.run_observers.remove(self.observe_run))
        self._undo.append(attempts.observe(self.app, self.record_attempt))

    def uninstrument(self) -> None:
        while self._undo:
            self._undo.pop()()
        _installed.pop(self.app, None)

    # --- push ---------------------------------------------------------------------------------
    def _wrap_pushes(self) -> None:
        """Span the app's ``push_many`` and ``push_many_sync`` (every push goes through them),
        as attributes of this app object only: other apps, and this one once
        uninstrumented, push exactly as before."""
        store, store_sync = self.app.push_many, self.app.push_many_sync

        async def push_many(jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
            with self.pushing(jobs) as push:
                return push.stored(await store(push.jobs, connection))

        def push_many_sync(jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
            with self.pushing(jobs) as push:
                return push.stored(store_sync(push.jobs, connection))

        functools.update_wrapper(push_many, store)
        functools.update_wrapper(push_many_sync, store_sync)
        self.app.push_many = push_many  # type: ignore[method-assign]
        self.app.push_many_sync = push_many_sync  # type: ignore[method-assign]

        def restore() -> None:
            del self.app.push_many, self.app.push_many_sync

        self._undo.append(restore)

    @contextlib.contextmanager
    def pushing(self, jobs: Sequence[Job]) -> Iterator["_Push"]:
        """A PRODUCER span around storing ``jobs``, its context copied into each job's meta."""
        spanned = [i for i, job in enumerate(jobs) if not _left_to_celery(job.meta)]
        if not spanned:
            yield _Push(jobs, [], None)
            return
        tasks = {jobs[i].func for i in spanned}
        queues = {jobs[i].queue for i in spanned}
        attributes: dict[str, Any] = {"messaging.system": SYSTEM, "messaging.operation.type": "send",
                                      "messaging.operation.name": "push"}
        if len(queues) == 1:
            attributes["messaging.destination.name"] = next(iter(queues))
        if len(tasks) == 1:
            attributes["chancy.task.name"] = next(iter(tasks))
        if len(spanned) > 1:
            attributes["messaging.batch.message_count"] = len(spanned)
        name = f"push {next(iter(tasks))}" if len(tasks) == 1 else "push"
        with self.tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            traced = list(jobs)
            for i in spanned:
                traced[i] = jobs[i].with_options(meta={**jobs[i].meta, CARRIER: carrier})
            yield _Push(traced, spanned, span)

    # --- run ----------------------------------------------------------------------------------
    def observe_run(self, record: JobRecord) -> Finish:
        """A run observer (see :data:`chancy.execution.run_observers`): a CONSUMER span,
        current while the task runs, child of the push's span."""
        if _left_to_celery(record.meta):
            return _nothing
        span = self.tracer.start_span(
            f"run {record.func}", context=_parent_context(record.meta), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": SYSTEM, "messaging.operation.type": "process",
                        "messaging.operation.name": "run", "messaging.destination.name": record.queue,
                        "messaging.message.id": str(record.id), "chancy.task.name": record.func,
                        "chancy.job.attempt": record.attempts})
        token = context.attach(trace.set_span_in_context(span))

        def finish(outcome: Outcome) -> None:
            try:
                _end_run_span(span, outcome)
            finally:
                context.detach(token)

        return finish

    # --- metrics ------------------------------------------------------------------------------
    def record_attempt(self, attempt: attempts.FinishedAttempt) -> None:
        labels = {"messaging.system": SYSTEM, "messaging.destination.name": attempt.queue,
                  "chancy.task.name": attempt.task}
        self._runs.add(1, {**labels, "chancy.job.outcome": attempt.outcome})
        if attempt.failed:
            self._failures.add(1, labels)
        if attempt.duration is not None:
            self._duration.record(attempt.duration, {**labels, "chancy.job.outcome": attempt.outcome})
        if attempt.lag is not None:
            self._lag.record(attempt.lag, labels)


def _end_run_span(span: trace.Span, outcome: Outcome) -> None:
    span.set_attribute("chancy.job.outcome", outcome_name(outcome))
    if outcome.succeeded:
        span.set_status(Status(StatusCode.OK))
    else:
        error = outcome.error or {}
        kind = str(error.get("type") or "unknown")
        span.set_attribute("error.type", kind)
        span.add_event("exception", {"exception.type": kind, "exception.message": str(error.get("message") or ""),
                                     "exception.stacktrace": str(error.get("traceback") or "")})
        span.set_status(Status(StatusCode.ERROR, f"{kind}: {error.get('message') or ''}"))
    span.end()


def _nothing(outcome: Outcome) -> None:
    """The finish of a run this module does not span."""


class _Push:
    """A push in progress: the jobs to store (with their trace context) and, once stored,
    their ids on the span."""

    def __init__(self, jobs: Sequence[Job], spanned: list[int], span: trace.Span | None) -> None:
        self.jobs = jobs
        self._spanned = spanned
        self._span = span

    def stored(self, refs: list[Reference]) -> list[Reference]:
        if self._span is not None and len(self._spanned) == 1:
            self._span.set_attribute("messaging.message.id", str(refs[self._spanned[0]].id))
        return refs


#: The instrumentation of each instrumented app in this process.
_installed: "weakref.WeakKeyDictionary[Chancy, Instrumentation]" = weakref.WeakKeyDictionary()


def instrument(app: Any, *, tracer_provider: trace.TracerProvider | None = None,
               meter_provider: metrics.MeterProvider | None = None) -> Instrumentation:
    """Trace ``app``'s pushes and the runs of this process, and count its workers' attempts,
    with the given providers (default: the global ones your SDK setup registered). ``app``
    is a :class:`Chancy` or a ``chancy.compat`` Celery app. Instrumenting an app again
    returns its instrumentation as it is. Call it at module level, where the app is built."""
    core = app if isinstance(app, Chancy) else getattr(app, "chancy", None)
    if not isinstance(core, Chancy):
        raise TypeError(f"instrument() takes a Chancy app or a chancy.compat Celery app, not {app!r}")
    existing = _installed.get(core)
    if existing is not None:
        return existing
    instrumentation = Instrumentation(core, tracer_provider, meter_provider)
    instrumentation.install()
    _installed[core] = instrumentation
    return instrumentation
