"""Run the compat tests' worker under one of Celery's pools (``-P``), so a task-behaviour
test can be parametrized over every pool a Chancy worker offers."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from chancy.compat import worker_app
from tests.compat.conftest import BackgroundWorker

#: Every ``-P`` a Chancy worker runs Celery tasks under.
POOLS = ("process", "thread", "asyncio", "solo")


def start_pool_worker(celery_app: Any, pool: str, concurrency: int = 2) -> BackgroundWorker:
    """A started worker for ``celery_app`` whose queues run under ``pool``."""
    worker_app(celery_app, pool=pool, concurrency=concurrency)
    return BackgroundWorker(celery_app).start()


@pytest.fixture(params=POOLS)
def pool_worker(request: pytest.FixtureRequest, celery_app: Any,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[BackgroundWorker]:
    """A worker under each pool in turn (``request.param`` names it). Process-pool children
    load the app afresh, so they find this test's database through ``CHANCY_DSN``."""
    monkeypatch.setenv("CHANCY_DSN", celery_app.conf.broker_url)
    background = start_pool_worker(celery_app, request.param)
    yield background
    background.stop()
