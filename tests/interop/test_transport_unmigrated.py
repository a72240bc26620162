"""A database that was never migrated: a stock Celery producer and worker on Chancy's
broker say to run ``chancy migrate`` (the command given, its password masked) instead of
failing on a raw ``UndefinedTable``."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from broker_support import broker_only_app
from chancy.store.pg.server import create_database, drop_database
from chancy.errors import SchemaOutOfDateError
from chancy.testing import eventually

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def unmigrated_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database without Chancy's tables (``dsn`` is migrated by the workers' fixture),
    its DSN carrying a password."""
    name = f"chancy_unmigrated_{uuid.uuid4().hex}"
    yield _with_password(create_database(pg_admin_dsn, name))
    drop_database(pg_admin_dsn, name)


def _with_password(dsn: str) -> str:
    """The test server trusts its clients, so a password in the DSN is only text to mask."""
    scheme, _, rest = dsn.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{PASSWORD}@{host}"


def test_delay_on_an_unmigrated_database_says_to_migrate(unmigrated_dsn):
    app = broker_only_app(unmigrated_dsn, "chancy+" + unmigrated_dsn, "rpc://")
    with pytest.raises(SchemaOutOfDateError) as raised:
        app.tasks["interop.add"].delay(1, 2)
    message = str(raised.value)
    assert f"chancy migrate --dsn '{unmigrated_dsn.replace(PASSWORD, '***')}'" in message
    assert PASSWORD not in message and "has no Chancy tables" in message
    app.close()


@pytest.mark.parametrize("pool", ["solo", "prefork"])
async def test_a_worker_on_an_unmigrated_database_stops_saying_to_migrate(unmigrated_dsn, celery_worker, pool):
    worker = celery_worker(pool=pool, app="broker_only_app", INTEROP_DSN=unmigrated_dsn, INTEROP_BACKEND="rpc://")
    assert await eventually(lambda: worker.process.poll() is not None, timeout=30), worker.log()
    log = worker.log()
    assert "chancy migrate --dsn '" in log and "SchemaOutOfDateError" in log, log
    assert "UndefinedTable" not in log and PASSWORD not in log, log
