import contextlib

import pytest

from chancy import Chancy, Queue, execution


@pytest.fixture(autouse=True, scope="session")
def cluster_tasks_allowed():
    """The tests push the plain functions of cluster_tasks by import path (a worker runs
    unregistered functions only from allowed modules)."""
    execution.allow_imports(["cluster_tasks"])


@pytest.fixture
async def make_app(dsn):
    """``await make_app(*plugins)``: a migrated app on this test's database, closed after it."""
    async with contextlib.AsyncExitStack() as apps:

        async def make(*plugins, **options):
            app = Chancy(dsn, plugins=list(plugins) or [Queue("default", concurrency=4)], **options)
            await apps.enter_async_context(app)
            await app.migrate()
            return app

        yield make
