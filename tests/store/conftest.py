"""Fixtures of the store tests: ``store`` is each job store in turn (the Postgres queue on
a fresh database of the session's server, then the in-memory queue), ``pg_store`` the
Postgres one alone, for behaviour only it has."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chancy import Chancy, Queue
from chancy.store.memory import MemoryQueue
from contract_support import Subject

STORES = ["postgres", "memory"]


async def _subject(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if kind == "postgres":
        app = Chancy(request.getfixturevalue("dsn"),
                     plugins=[Queue("default"), Queue("other"), Queue("fair", fair_keys=True)])
        await app.migrate()
    else:
        app = Chancy(plugins=[MemoryQueue("default"), MemoryQueue("other"), MemoryQueue("fair", fair_keys=True)])
    try:
        yield Subject(kind, app, app.queues["default"], app.queues["other"])
    finally:
        await app.close()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    async for subject in _subject(request.param, request):
        yield subject


@pytest.fixture
async def pg_store(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    async for subject in _subject("postgres", request):
        yield subject


@pytest.fixture
async def memory_store(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    async for subject in _subject("memory", request):
        yield subject
