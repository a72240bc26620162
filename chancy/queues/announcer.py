"""Announcing pushes outside the transactions that made them.

Postgres serialises the commits of all transactions that sent a NOTIFY: a cluster-wide
lock is taken at commit and held until the commit is flushed, so durable notifying
commits cannot share a WAL flush. Pushes from many processes at once queued on it (8
processes pushing one job at a time: ~4k notifying inserts/s where plain inserts reach
~9k). So when Chancy owns a push's transaction, the push commits without a notification,
and its process announces the queues it pushed to in a transaction of its own, committed
without waiting for the flush (a notification does not survive a crash anyway, and the
jobs it announces are already durable). One announcement per :data:`WINDOW` at most: the
first push after a quiet spell is announced at once, a burst is announced as one wake-up,
which the worker also claims as one batch.

A push inside the caller's transaction still notifies in it: only its commit may announce
it. An announcement that cannot be sent is logged; workers find the jobs at their next
poll."""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from typing import Awaitable, Callable, Iterable

logger = logging.getLogger(__name__)

#: Seconds between two announcements of one process (per announcer).
WINDOW = 0.002

_LIVE: "weakref.WeakSet[ThreadAnnouncer]" = weakref.WeakSet()


def _log_failure(queues: list[str], exc: Exception) -> None:
    logger.warning("Could not announce jobs pushed to %s (workers will find them at their next poll): %s",
                   ", ".join(queues), exc)


class ThreadAnnouncer:
    """Announces sync pushes from a daemon thread (started on the first push, and again in
    a forked child), so the pushing thread never waits for it."""

    def __init__(self, send: Callable[[list[str]], None], window: float = WINDOW) -> None:
        self._send = send
        self._window = window
        self._due: set[str] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    def announce(self, queues: Iterable[str]) -> None:
        with self._wake:
            idle = not self._due
            self._due.update(queues)
            if not self._due:
                return
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._run, name="chancy-announcer", daemon=True)
                self._thread.start()
                _LIVE.add(self)
            elif idle:
                self._wake.notify()

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._wake:
                queues = self._take_when_due(last)
            if queues is None:
                return
            self._deliver(queues)
            last = time.monotonic()

    def _take_when_due(self, last: float) -> list[str] | None:
        """The queues to announce once the window since ``last`` is over (at once when
        closing); None when closed with nothing due. Called with the lock held."""
        while True:
            if not self._due:
                if self._closing:
                    return None
                self._wake.wait()
                continue
            pause = last + self._window - time.monotonic()
            if pause <= 0 or self._closing:
                queues, self._due = sorted(self._due), set()
                return queues
            self._wake.wait(pause)  # close() cuts it short

    def _deliver(self, queues: list[str]) -> None:
        try:
            self._send(queues)
        except Exception as exc:  # a dead server must not kill the announcer
            _log_failure(queues, exc)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is due now and stop the thread (before the pool it sends on closes)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        with self._wake:
            queues, self._due = sorted(self._due), set()
        if queues:
            self._deliver(queues)


@atexit.register
def _announce_before_exit() -> None:
    """A script that pushes and exits still wakes the workers at once."""
    for announcer in list(_LIVE):
        announcer.close(timeout=1.0)


class LoopAnnouncer:
    """Announces async pushes from a task on the pushing event loop."""

    def __init__(self, send: Callable[[list[str]], Awaitable[None]], window: float = WINDOW) -> None:
        self._send = send
        self._window = window
        self._due: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")

    def announce(self, queues: Iterable[str]) -> None:
        self._due.update(queues)
        if not self._due:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="chancy-announcer")

    async def _run(self) -> None:
        while self._due:
            pause = self._last + self._window - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            await self._deliver()

    async def _deliver(self) -> None:
        queues, self._due = sorted(self._due), set()
        if not queues:
            return
        try:
            await self._send(queues)
        except asyncio.CancelledError:  # closing: close() sends them
            self._due.update(queues)
            raise
        except Exception as exc:  # a dead server must not fail a later push
            _log_failure(queues, exc)
        self._last = time.monotonic()

    async def close(self) -> None:
        """Send what is due now (before the pool it sends on closes)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._deliver()
