"""Celery's signals: the same names and ``connect``/``send`` API, sent by the compat
layer's task runner and worker hooks."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Callable

log = logging.getLogger("chancy.compat.signals")


class Signal:
    """A named hook; receivers get ``sender=`` and keyword arguments."""

    def __init__(self, name: str, providing_args: Any = None) -> None:
        self.name = name
        self._receivers: list[tuple[Any, Any, bool]] = []  # (ref to receiver, sender, weak)
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
            if not any(self._resolve(r, w) is receiver and s == sender for r, s, w in self._receivers):
                self._receivers.append((ref, sender, weak))
        return receiver

    def disconnect(self, receiver: Callable[..., Any], sender: Any = None) -> bool:
        with self._lock:
            before = len(self._receivers)
            self._receivers = [(r, s, w) for r, s, w in self._receivers
                               if not (self._resolve(r, w) is receiver and s == sender)]
            return len(self._receivers) != before

    @staticmethod
    def _resolve(ref: Any, weak: bool) -> Any:
        return ref() if weak else ref

    def _live(self, sender: Any) -> list[Callable[..., Any]]:
        with self._lock:
            receivers = list(self._receivers)
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
        if not self._receivers:  # the common case, twice per published task
            return []
        responses = []
        for fn in self._live(sender):
            try:
                responses.append((fn, fn(signal=self, sender=sender, **named)))
            except Exception as exc:  # noqa: BLE001 - one receiver must not break the task
                log.exception("signal %s: receiver %r raised", self.name, fn)
                responses.append((fn, exc))
        return responses


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
import_modules = Signal("import_modules")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_shutting_down = Signal("worker_shutting_down")
celeryd_init = Signal("celeryd_init")
beat_init = Signal("beat_init")
setup_logging = Signal("setup_logging")
