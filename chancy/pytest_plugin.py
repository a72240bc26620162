"""The pytest plugin (loaded by pytest whenever Chancy is installed): fixtures to test
code that pushes and runs Chancy jobs. See docs/testing.md.

- ``chancy_app``: the app under test, named by ``--chancy-app`` or the ``chancy_app`` ini
  setting (``module:attribute``, a Chancy or chancy.compat Celery app); or override it.
- ``chancy_memory``: that app with every queue in memory for the test (nothing touches
  Postgres).
- ``chancy_db``: that app on a fresh, migrated database of its own for the test, on the
  server of ``--chancy-dsn`` / ``CHANCY_TEST_DSN`` (a superuser DSN), else on a
  throwaway server (``chancy.embedded``) started once per session.
- ``chancy_worker``: a real worker serving the app during a synchronous test.

Nothing is imported or started until a test asks for one of these fixtures, so projects
that do not use them pay nothing."""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from chancy.app import Chancy
    from chancy.worker import Worker

APP_HELP = "The app under test for Chancy's fixtures, as module:attribute (a Chancy or chancy.compat app)."
DSN_HELP = ("A superuser DSN of the Postgres server on which chancy_db creates a database per test "
            "[env CHANCY_TEST_DSN; default: a throwaway server started once per session].")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chancy")
    group.addoption("--chancy-app", dest="chancy_app", metavar="MODULE:ATTR", help=APP_HELP)
    group.addoption("--chancy-dsn", dest="chancy_dsn", metavar="DSN", help=DSN_HELP)
    parser.addini("chancy_app", APP_HELP)


@pytest.fixture
def chancy_app(request: pytest.FixtureRequest) -> Any:
    """The app under test (as you defined it: a Chancy or chancy.compat Celery app)."""
    spec = request.config.getoption("chancy_app") or request.config.getini("chancy_app")
    if not spec:
        raise pytest.UsageError(
            "Chancy's fixtures need your app: set `chancy_app = myproject.tasks:app` under [pytest] in "
            "pytest.ini (or [tool.pytest.ini_options] in pyproject.toml), pass --chancy-app, or define a "
            "`chancy_app` fixture returning it in conftest.py")
    from chancy.cli.loading import find_app
    from chancy.errors import ConfigurationError

    try:
        return find_app(spec)
    except ConfigurationError as exc:
        raise pytest.UsageError(f"chancy_app {spec!r}: {exc}") from None


@pytest.fixture
def chancy_memory(chancy_app: Any) -> Iterator["Chancy"]:
    """The app with every queue in this process for the test; its jobs vanish afterwards."""
    from chancy.testing import in_memory

    with in_memory(chancy_app) as core:
        yield core


class _Databases:
    """Per-test databases on one server: each a copy of a migrated template (one per
    table prefix), which is much faster than migrating every test's database."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.templates: dict[str, str] = {}
        self.created: list[str] = []

    def _template(self, prefix: str) -> str:
        if prefix not in self.templates:
            from chancy.app import Chancy

            name = f"chancy_pytest_template_{uuid.uuid4().hex[:12]}"
            migrator = Chancy(self._create(name), prefix=prefix)
            asyncio.run(migrator.migrate())
            self.templates[prefix] = name
        return self.templates[prefix]

    def _create(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template``); its DSN."""
        from chancy.store.pg.server import create_database

        dsn = create_database(self.admin_dsn, name, template)
        self.created.append(name)
        return dsn

    def new(self, prefix: str) -> tuple[str, str]:
        """A fresh migrated database: its name and DSN."""
        name = f"chancy_pytest_{uuid.uuid4().hex[:12]}"
        return name, self._create(name, self._template(prefix))

    def drop(self, name: str) -> None:
        from chancy.store.pg.server import drop_database

        drop_database(self.admin_dsn, name)
        self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(name)


@pytest.fixture(scope="session")
def chancy_databases(request: pytest.FixtureRequest) -> Iterator[_Databases]:
    """Where ``chancy_db`` makes its databases (a server is started only if asked for)."""
    admin_dsn = request.config.getoption("chancy_dsn") or os.environ.get("CHANCY_TEST_DSN")
    if admin_dsn:
        databases = _Databases(admin_dsn)
        yield databases
        databases.drop_all()
        return
    from chancy.embedded import start_throwaway_server

    with start_throwaway_server() as server:
        databases = _Databases(server.admin_dsn)
        yield databases
        databases.drop_all()


@pytest.fixture
def chancy_db(chancy_app: Any, chancy_databases: _Databases) -> Iterator["Chancy"]:
    """The app on a fresh, migrated database of its own for this test (dropped after)."""
    from chancy.testing import app_of

    core = app_of(chancy_app)
    saved = core.store._resolved_dsn
    name, dsn = chancy_databases.new(core.names.prefix)
    core.dsn = dsn  # refused, with a clear error, if the app is already connected elsewhere
    try:
        yield core
    finally:
        core.close_sync()
        core.store._resolved_dsn = saved  # as it was: the app may not have resolved its DSN yet
        chancy_databases.drop(name)


@pytest.fixture
def chancy_worker(request: pytest.FixtureRequest, chancy_app: Any) -> Iterator["Worker"]:
    """A real worker serving the app (in a thread) for a synchronous test. Request it
    after ``chancy_db`` or ``chancy_memory``, so it serves what they set up."""
    if inspect.iscoroutinefunction(request.function):
        raise pytest.UsageError(
            "chancy_worker is for synchronous tests: in an async test, use "
            "`async with chancy.testing.running_worker(app):` (the app's async pools serve one event loop)")
    for setup in ("chancy_db", "chancy_memory"):  # whatever order the test named them in
        if setup in request.fixturenames:
            request.getfixturevalue(setup)
    from chancy.testing import worker_thread

    with worker_thread(chancy_app, shutdown_timeout=10.0) as worker:
        yield worker


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After an async test that used the app, close its async pools in the test's event
    loop, the only loop that can (they would be unusable in the next test's loop)."""
    yield
    funcargs = getattr(item, "funcargs", {})
    if "chancy_app" not in funcargs or not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return
    if not loop.is_closed() and not loop.is_running():
        from chancy.testing import app_of

        loop.run_until_complete(app_of(funcargs["chancy_app"]).close())
