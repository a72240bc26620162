"""Fixtures for the Celery-compatibility tests: the docs' ``proj`` app pointed at a fresh
database, and a real Chancy worker running in a background thread (Celery callers are
synchronous, so tests call ``.delay()`` / ``.get()`` from the test thread)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import pytest

from chancy.testing import running_worker
from tests.compat.proj.celery import app as proj_app


class BackgroundWorker:
    """A worker for ``celery_app`` in its own thread and event loop."""

    def __init__(self, celery_app: Any, **worker_options: Any) -> None:
        self.celery_app = celery_app
        self.options = worker_options
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.worker: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="compat-test-worker", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        chancy = self.celery_app.chancy
        try:
            async with running_worker(chancy, **self.options) as worker:
                self.worker = worker
                self.ready.set()
                await self._stop.wait()
        finally:
            await chancy.close()

    def start(self) -> "BackgroundWorker":
        self._thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self.error is not None:
            raise self.error


@pytest.fixture
def celery_app(dsn: str) -> Iterator[Any]:
    """The docs' ``proj`` app, on this test's database, migrated, eager mode off."""
    from chancy.compat import worker_app

    proj_app.close()
    saved = dict(proj_app.conf.changes)
    proj_app.conf.broker_url = dsn
    worker_app(proj_app, pool="thread", concurrency=4)
    asyncio.run(proj_app.chancy.migrate())
    yield proj_app
    proj_app.close()
    for key in list(proj_app.conf.changes):
        if key not in saved:
            del proj_app.conf[key]
    proj_app.conf.update(saved)


@pytest.fixture
def worker(celery_app: Any) -> Iterator[BackgroundWorker]:
    background = BackgroundWorker(celery_app).start()
    yield background
    background.stop()
