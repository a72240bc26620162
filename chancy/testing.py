"""Helpers for testing code that uses Chancy: run a real worker for the duration of a
block, and wait for conditions without fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from chancy.app import Chancy
from chancy.worker import Worker


@contextlib.asynccontextmanager
async def running_worker(app: Chancy, **options: Any) -> AsyncIterator[Worker]:
    """Start a worker for ``app`` in this event loop; drain and stop it on exit."""
    options.setdefault("install_signal_handlers", False)
    options.setdefault("shutdown_timeout", 10.0)
    worker = Worker(app, **options)
    task = asyncio.create_task(worker.start())
    ready = asyncio.create_task(worker.wait_until_ready())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises the start-up error
    try:
        yield worker
    finally:
        worker.request_stop()
        await task


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        await asyncio.sleep(interval)
