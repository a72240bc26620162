"""``soft_time_limit``: raise :class:`SoftTimeLimitExceeded` inside the running task when
its soft limit passes, so it can clean up; the hard ``time_limit`` stays the executor's.

The exception is delivered with ``PyThreadState_SetAsyncExc``: it lands at the next
Python bytecode the task runs, so a task blocked in one long C call (``time.sleep``, a
socket read) sees it when that call returns."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator

from chancy.compat.exceptions import SoftTimeLimitExceeded

# Our own prototype (the shared ctypes.pythonapi one is left untouched); a NULL exception
# clears a pending one.
_set_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi))


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Within the block, raise SoftTimeLimitExceeded in this thread after ``seconds``."""
    if not seconds:
        yield
        return
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"inside": True, "raised": False}

    def fire() -> None:
        with lock:
            if state["inside"]:
                state["raised"] = True
                _set_async_exc(target, ctypes.py_object(SoftTimeLimitExceeded))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["inside"] = False
            if state["raised"]:
                _set_async_exc(target, ctypes.py_object())  # drop it if it has not landed yet
