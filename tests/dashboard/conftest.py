"""Fixtures for the dashboard: a migrated app, users, and an HTTP client that talks to
the ASGI app over httpx (in process, against the real Postgres of ``dsn``)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason='the dashboard needs its extra: pip install "chancy[dashboard]" httpx')
httpx = pytest.importorskip("httpx", reason="the dashboard tests talk HTTP through httpx: pip install httpx")

from chancy import Chancy, Queue, execution  # noqa: E402
from chancy.dashboard import User, hash_password  # noqa: E402
from chancy.dashboard.app import create_app  # noqa: E402

PASSWORD = "correct horse battery"
# Cheap scrypt parameters for speed; the default cost is tested in test_auth.py.
FAST = {"n": 2**4, "r": 8, "p": 1}
USERS = [
    User("olga", hash_password(PASSWORD, **FAST), "operator"),
    User("vera", hash_password(PASSWORD, **FAST), "viewer"),
]
BASE = "http://dash.test"


@pytest.fixture(autouse=True, scope="session")
def dashboard_tasks_allowed():
    """The tests push the plain functions of dashboard_tasks by import path (a worker runs
    unregistered functions only from allowed modules)."""
    execution.allow_imports(["tests.dashboard.dashboard_tasks"])


@pytest.fixture
async def app(dsn):
    app = Chancy(dsn, plugins=[Queue("default", concurrency=2), Queue("emails", concurrency=1)])
    await app.migrate()
    yield app
    await app.close()


@pytest.fixture
def dashboard(app):
    return create_app(app, USERS, refresh_seconds=0, commit_lag=0)


@pytest.fixture
async def anonymous(dashboard):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as client:
        yield client


async def login(client: httpx.AsyncClient, name: str) -> str:
    """Log ``client`` in as ``name``; returns the session's CSRF token."""
    response = await client.post("/api/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


@pytest.fixture
async def operator(dashboard):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as client:
        client.headers["x-csrf-token"] = await login(client, "olga")
        yield client


@pytest.fixture
async def viewer(dashboard):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as client:
        client.headers["x-csrf-token"] = await login(client, "vera")
        yield client
