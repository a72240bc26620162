import pytest

from chancy import Chancy, Queue


@pytest.fixture
async def make_app(dsn):
    """Build migrated apps; all are closed after the test."""
    apps = []

    async def make(*plugins, **options):
        app = Chancy(dsn, plugins=list(plugins) or [Queue("default", concurrency=4)], **options)
        await app.migrate()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


@pytest.fixture
async def sql(make_app):
    """Run one statement on a fresh app's database: ``await sql(query, *params)`` -> rows."""
    app = await make_app()

    async def run(query, *params):
        async with app.connection() as conn:
            cur = await conn.execute(query, params or None)
            return await cur.fetchall() if cur.description else []

    return run
