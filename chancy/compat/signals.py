"""Celery's signals, sent by the compat layer's task runner, publisher and worker hooks.

When ``celery`` is installed, the named signals *are* Celery's own objects
(``chancy.compat.signals.task_prerun is celery.signals.task_prerun``), sent with the
arguments Celery sends, so integrations that connect to ``celery.signals``
(OpenTelemetry, Sentry, Datadog) keep working after the import switch. Without it, the
same names are this module's :class:`Signal`, with the same ``connect``/``send`` API."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from chancy.job import Job

try:
    from celery import signals as _celery_signals
except ImportError:  # celery is an optional extra
    _celery_signals = None

log = logging.getLogger("chancy.compat.signals")


class Signal:
    """A named hook; receivers get ``sender=`` and keyword arguments."""

    def __init__(self, name: str, providing_args: Any = None) -> None:
        self.name = name
        self.receivers: list[tuple[Any, Any, bool]] = []  # (ref to receiver, sender, weak)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, receiver: Callable[..., Any] | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: Any = None) -> Any:
        """Connect a receiver; usable as ``@signal.connect`` or ``@signal.connect(sender=…)``."""
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        ref = weakref.WeakMethod(receiver) if weak and hasattr(receiver, "__self__") else (
            weakref.ref(receiver) if weak else receiver)
        with self._lock:
            if not any(self._resolve(r, w) is receiver and s == sender for r, s, w in self.receivers):
                self.receivers.append((ref, sender, weak))
        return receiver

    def disconnect(self, receiver: Callable[..., Any], sender: Any = None) -> bool:
        with self._lock:
            before = len(self.receivers)
            self.receivers = [(r, s, w) for r, s, w in self.receivers
                               if not (self._resolve(r, w) is receiver and s == sender)]
            return len(self.receivers) != before

    @staticmethod
    def _resolve(ref: Any, weak: bool) -> Any:
        return ref() if weak else ref

    def _live(self, sender: Any) -> list[Callable[..., Any]]:
        with self._lock:
            receivers = list(self.receivers)
        found = []
        for ref, wanted, weak in receivers:
            fn = self._resolve(ref, weak)
            if fn is None:
                continue
            if wanted is None or wanted == sender or wanted == getattr(sender, "name", None):
                found.append(fn)
        return found

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver; a receiver's exception is logged, never raised (as Celery)."""
        if not self.receivers:  # the common case, twice per published task
            return []
        responses = []
        for fn in self._live(sender):
            try:
                responses.append((fn, fn(signal=self, sender=sender, **named)))
            except Exception as exc:  # noqa: BLE001 - one receiver must not break the task
                log.exception("signal %s: receiver %r raised", self.name, fn)
                responses.append((fn, exc))
        return responses


def _named(name: str) -> Any:
    """Celery's signal of that name when celery is installed, else one of ours."""
    return getattr(_celery_signals, name) if _celery_signals is not None else Signal(name)


before_task_publish = _named("before_task_publish")
after_task_publish = _named("after_task_publish")
task_received = _named("task_received")
task_prerun = _named("task_prerun")
task_postrun = _named("task_postrun")
task_success = _named("task_success")
task_retry = _named("task_retry")
task_failure = _named("task_failure")
task_revoked = _named("task_revoked")
task_rejected = _named("task_rejected")
task_unknown = _named("task_unknown")
task_internal_error = _named("task_internal_error")
import_modules = _named("import_modules")
worker_init = _named("worker_init")
worker_process_init = _named("worker_process_init")
worker_ready = _named("worker_ready")
worker_shutdown = _named("worker_shutdown")
worker_shutting_down = _named("worker_shutting_down")
celeryd_init = _named("celeryd_init")
beat_init = _named("beat_init")
setup_logging = _named("setup_logging")


# --- publishing: Celery's arguments ------------------------------------------------------------


def message_headers(job: "Job") -> dict[str, Any]:
    """The protocol-v2 headers Celery would publish for this job (its custom headers at
    top level, as on the wire)."""
    celery = job.meta.get("celery", {})
    task_id = celery.get("task_id") or str(job.id)
    return {**(celery.get("headers") or {}), **_protocol_headers(job, celery, task_id)}


def _protocol_headers(job: "Job", celery: dict[str, Any], task_id: str) -> dict[str, Any]:
    return {
        "lang": "py", "task": job.func, "id": task_id, "shadow": celery.get("shadow"),
        "eta": job.scheduled_at.isoformat() if celery.get("eta") and job.scheduled_at else None,
        "expires": job.expires_at.isoformat() if job.expires_at else None,
        "group": celery.get("group"), "group_index": celery.get("group_index"), "retries": 0,
        "timelimit": list(celery.get("timelimit") or (None, None)),
        "root_id": celery.get("root_id") or task_id, "parent_id": celery.get("parent_id"),
        "argsrepr": repr(tuple(job.args)), "kwargsrepr": repr(dict(job.kwargs)), "origin": celery.get("origin"),
        "ignore_result": bool(celery.get("ignore_result")),
        "replaced_task_nesting": int(celery.get("replaced_task_nesting") or 0),
        "stamped_headers": celery.get("stamped_headers"), "stamps": celery.get("stamps"),
    }


def _publish_arguments(job: "Job", headers: dict[str, Any]) -> dict[str, Any]:
    celery = job.meta.get("celery", {})
    embed = {key: celery.get(key) for key in ("callbacks", "errbacks", "chain", "chord")}
    return {"sender": job.func, "body": (tuple(job.args), dict(job.kwargs), embed), "exchange": "",
            "routing_key": job.queue, "headers": headers}


def send_before_publish(jobs: list["Job"]) -> list[tuple["Job", dict[str, Any]]]:
    """Send ``before_task_publish`` for each job; a header a receiver adds (a tracing
    context, say) is kept as a custom header of the job, as Celery would publish it."""
    if not before_task_publish.receivers and not after_task_publish.receivers:
        return [(job, {}) for job in jobs]
    from chancy.compat.protocol import PROTOCOL_HEADERS  # the wire format's module, loaded on use

    sent = []
    for job in jobs:
        headers = message_headers(job)
        before_task_publish.send(**_publish_arguments(job, headers), declare=[], retry_policy=None,
                                 properties={"correlation_id": headers["id"], "priority": job.priority,
                                             "reply_to": job.meta.get("celery", {}).get("reply_to")})
        celery = job.meta.get("celery", {})
        custom = {k: v for k, v in headers.items() if k not in PROTOCOL_HEADERS}
        if custom != (celery.get("headers") or {}):
            job = job.with_options(meta={**job.meta, "celery": {**celery, "headers": custom}})
        sent.append((job, headers))
    return sent


def send_after_publish(sent: Iterable[tuple["Job", dict[str, Any]]]) -> None:
    if not after_task_publish.receivers:
        return
    for job, headers in sent:
        after_task_publish.send(**_publish_arguments(job, headers))
