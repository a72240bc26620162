"""A user's test of their schedules needs no Postgres: inside ``chancy.testing.in_memory``
the schedules live in the in-memory store, and a firer (a worker's cron plugin, or
``Cron.fire_forever``) pushes each firing into the in-memory queues. Every app here points
at a closed port, so anything that reached for Postgres would fail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from chancy import Chancy, Job, Queue
from chancy.compat import Celery
from chancy.compat.beat import sync_schedule
from chancy.errors import DatabaseUnavailableError
from chancy.plugins.cron import Cron
from chancy.testing import assert_pushed, eventually, in_memory, pushed_jobs, running_worker


def _closed_port_dsn() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://nobody@127.0.0.1:{port}/nothing"


@pytest.fixture
def app() -> Iterator[Chancy]:
    app = Chancy(_closed_port_dsn(), plugins=[Queue("default"), Cron(interval=0.05)])

    @app.task(name="shop.ping")
    def ping(n: int) -> int:
        return n

    yield app


def test_the_app_really_has_no_database(app: Chancy) -> None:
    with pytest.raises(DatabaseUnavailableError):
        Cron.schedules_sync(app)


def test_schedules_are_stored_listed_and_dropped_in_memory(app: Chancy) -> None:
    with in_memory(app):
        Cron.schedule_sync(app, "ping", Job("shop.ping", args=[1]), every=60)
        assert [(s.name, s.every, s.job.args) for s in Cron.schedules_sync(app)] == [("ping", 60, (1,))]
        Cron.unschedule_sync(app, "ping")
        assert Cron.schedules_sync(app) == []
        Cron.schedule_sync(app, "left", Job("shop.ping", args=[1]), every=60)
    with in_memory(app):  # a new in-memory block starts empty, as its jobs do
        assert Cron.schedules_sync(app) == []


async def test_a_firer_pushes_each_tick_into_the_memory_queue(app: Chancy) -> None:
    with in_memory(app):
        await Cron.schedule(app, "ping", Job("shop.ping", args=[3]), every=0.1, expires_in=5)
        firer = asyncio.ensure_future(Cron(interval=0.05).fire_forever(app))
        try:
            await eventually(lambda: len(pushed_jobs(app, "shop.ping")) >= 2, timeout=10)
        finally:
            firer.cancel()
            await asyncio.gather(firer, return_exceptions=True)
        [first, *_] = assert_pushed("shop.ping", args=[3], queue="default", app=app)
        assert first.unique_key is not None and first.unique_key.startswith("cron:ping:")
        keys = [r.unique_key for r in pushed_jobs(app, "shop.ping")]
        assert len(keys) == len(set(keys))
        [schedule] = await Cron.schedules(app)
        assert schedule.last_fired_at is not None


async def test_a_worker_with_the_cron_plugin_fires_and_runs_the_schedule(app: Chancy) -> None:
    with in_memory(app):
        await Cron.schedule(app, "ping", Job("shop.ping", args=[4]), every=0.1)
        async with running_worker(app):
            await eventually(lambda: pushed_jobs(app, "shop.ping", states=["succeeded"]), timeout=10)
        assert pushed_jobs(app, "shop.ping", states=["succeeded"])[0].result == 4


def test_a_celery_apps_beat_schedule_syncs_into_memory() -> None:
    celery = Celery("proj", broker=_closed_port_dsn().replace("postgresql", "chancy+postgresql"),
                    set_as_current=False)
    celery.task(name="proj.nightly")(lambda: None)
    celery.conf.beat_schedule = {"nightly": {"task": "proj.nightly", "schedule": 3600.0}}
    with in_memory(celery):
        assert sync_schedule(celery) == ["celery:nightly"]
        [schedule] = Cron.schedules_sync(celery.chancy)
        assert (schedule.namespace, schedule.every, schedule.job.func) == ("proj", 3600, "proj.nightly")
