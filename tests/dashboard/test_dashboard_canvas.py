"""The canvas view on a real chain built through the Celery-compatible layer."""

from __future__ import annotations

import httpx
import pytest

from chancy.dashboard.app import create_app
from chancy.testing import running_worker

from tests.dashboard.conftest import BASE, USERS, login

compat = pytest.importorskip("chancy.compat")
TASK = "tests.dashboard.dashboard_tasks.add"


@pytest.fixture
async def celery_app(dsn):
    capp = compat.Celery("dashboard-canvas")
    capp.conf.broker_url = dsn
    compat.worker_app(capp, pool="asyncio", concurrency=2)
    await capp.chancy.migrate()
    yield capp
    await capp.chancy.close()
    capp.close()


async def test_a_chain_shows_its_steps_and_their_progress(celery_app):
    result = compat.chain(celery_app.signature(TASK, args=(1, 1)), celery_app.signature(TASK, args=(3,)),
                          celery_app.signature(TASK, args=(10,))).delay()
    ids = [result.parent.parent.id, result.parent.id, result.id]
    dashboard = create_app(celery_app.chancy, USERS, refresh_seconds=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as client:
        await login(client, "vera")
        before = (await client.get(f"/api/canvas/{ids[1]}")).json()
        assert [[j["id"] for j in step["jobs"]] for step in before["steps"]] == [[i] for i in ids]
        assert [step["jobs"][0]["state"] for step in before["steps"]] == ["pending", "scheduled", "scheduled"]
        page = await client.get(f"/jobs/{ids[2]}")
        assert f'href="/canvas/{ids[2]}"' in page.text

        async with running_worker(celery_app.chancy):
            assert (await celery_app.chancy.wait(ids[2], timeout=15)).result == 15
        after = (await client.get(f"/api/canvas/{ids[0]}")).json()
        assert [step["jobs"][0]["state"] for step in after["steps"]] == ["succeeded"] * 3
