import pytest

from chancy import Chancy, Queue, execution


@pytest.fixture(autouse=True, scope="session")
def core_tasks_allowed():
    """The tests push the plain functions of core_tasks by import path (a worker runs
    unregistered functions only from allowed modules)."""
    execution.allow_imports(["core_tasks"])


@pytest.fixture
async def make_app(dsn):
    """Build migrated apps with the given queues; all are closed after the test."""
    apps = []

    async def make(*queues, **options):
        app = Chancy(dsn, plugins=list(queues) or [Queue("default", concurrency=4)], **options)
        await app.migrate()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def app(make_app):
    return await make_app()


@pytest.fixture
def forget_declared_limits():
    """Put the process's declared task rate limits back as they were after the test."""
    from chancy import rate_limits

    saved = dict(rate_limits.declared)
    yield
    rate_limits.declared.clear()
    rate_limits.declared.update(saved)
