"""What every command shares: exit codes, turning Chancy's errors into them, and the
options that say which database and app a command works on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import os
from typing import Any, Callable, Iterator

import click
import psycopg

from chancy.app import Chancy
from chancy.errors import ConfigurationError, DatabaseUnavailableError, SchemaOutOfDateError
from chancy.store.pg.migrations import LATEST_VERSION
from chancy.store.pg.statements import Steps
from chancy.redaction import redact


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIGURATION = 3
    DATABASE_UNAVAILABLE = 4
    SCHEMA_OUT_OF_DATE = 5
    NOT_FOUND = 6
    CONFLICT = 7
    INTERRUPTED = 130


EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    failure (an unexpected error; `push --wait`, `result`: the job did not succeed)
  2    usage error (unknown option, bad JSON, bad value)
  3    configuration error (bad DSN, -A app not found, no Postgres binaries)
  4    the database cannot be reached
  5    the schema is not migrated (run `chancy migrate`)
  6    not found (no such job, task name, or live worker)
  7    conflict (the job's state does not allow that)
  130  interrupted (Ctrl-C)
"""


class CliError(click.ClickException):
    """An error reported as ``Error: <message>`` with a documented exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar, but reads it from the instance (``e.exit_code``):
        # one class serves every documented code.
        self.exit_code = int(code)  # type: ignore[misc]


@contextlib.contextmanager
def translated_errors(dsn: str | None = None) -> Iterator[None]:
    """Map Chancy's errors to messages and exit codes a script can rely on, every message
    with its passwords masked (those of ``dsn``, the command's, wherever they appear)."""
    try:
        yield
    except click.ClickException as exc:
        # click declares message Final; rewritten in place, the exception keeps its class,
        # context and exit code.
        exc.message = redact(exc.message, dsn)  # type: ignore[misc]
        raise
    except (click.exceptions.Exit, click.Abort):
        raise
    except KeyboardInterrupt:
        raise CliError("interrupted", ExitCode.INTERRUPTED) from None
    except SchemaOutOfDateError as exc:
        raise CliError(str(exc), ExitCode.SCHEMA_OUT_OF_DATE) from None
    except psycopg.errors.UndefinedTable as exc:
        raise CliError(f"{exc.diag.message_primary}: the schema is not migrated (wrong --prefix?); "
                       "run `chancy migrate`", ExitCode.SCHEMA_OUT_OF_DATE) from None
    except (DatabaseUnavailableError, psycopg.OperationalError) as exc:
        raise CliError(redact(str(exc).strip(), dsn), ExitCode.DATABASE_UNAVAILABLE) from None
    except ConfigurationError as exc:
        raise CliError(redact(str(exc), dsn), ExitCode.CONFIGURATION) from None


@dataclasses.dataclass
class Target:
    """Which app (``-A``) or, without one, which database and table prefix."""

    app_spec: str | None = None
    dsn: str | None = None
    prefix: str | None = None
    #: Seconds to wait for the database (to connect, then per statement); None: the app's
    #: connect timeout and no statement limit.
    timeout: float | None = None
    _loaded: Any = None

    @property
    def app_object(self) -> Any:
        """The ``-A`` object as the user defined it (a Chancy or Celery app), else the
        plain :class:`Chancy` made from ``--dsn`` and ``--prefix``."""
        if self._loaded is None:
            self._loaded = self._load()
            if self.timeout is not None:
                self.app.store.connect_timeout = self.timeout
        return self._loaded

    @property
    def app(self) -> Chancy:
        from chancy.cli.loading import core_app

        app = core_app(self.app_object)
        assert app is not None
        return app

    def _load(self) -> Any:
        if self.app_spec is None:
            return Chancy(self.dsn, prefix=self.prefix or "chancy_")
        from chancy.cli.loading import core_app, find_app

        if self.dsn:  # apps built without a DSN read it from the environment
            os.environ["CHANCY_DSN"] = self.dsn
        obj = find_app(self.app_spec)
        app = core_app(obj)
        assert app is not None
        if self.prefix and self.prefix != app.names.prefix:
            raise ConfigurationError(
                f"--prefix {self.prefix!r} contradicts the app's prefix {app.names.prefix!r}; drop one"
            )
        if self.dsn:
            app.dsn = self.dsn
        return obj

    def close(self) -> None:
        """Close the sync pool a command may have opened (CLI commands are one-shot)."""
        if self._loaded is not None:
            self.app.close_sync()

    def run(self, steps: Steps) -> Any:
        """Run one operation on a session of its own (CLI commands are one-shot), each
        statement limited to ``timeout`` when one is given."""
        store = self.app.store
        if self.timeout is None:
            return store.run_in_session_sync(steps)
        try:
            timeout_ms = max(1, round(self.timeout * 1000))
            return store.run_in_session_sync(store.admin.with_statement_timeout(timeout_ms, steps))
        except psycopg.errors.QueryCanceled:
            raise CliError(f"the database did not answer within {self.timeout:g}s (-t/--timeout)",
                           ExitCode.DATABASE_UNAVAILABLE) from None

    def require_schema(self) -> None:
        """Refuse to work on a database that was never (or not fully) migrated."""
        version = asyncio.run(schema_version(self.app))
        if version < LATEST_VERSION:
            raise SchemaOutOfDateError(
                f"The database schema (prefix {self.app.names.prefix!r}) is at version {version}, "
                f"this Chancy needs {LATEST_VERSION}: run `chancy migrate` first."
            )


async def schema_version(app: Chancy) -> int:
    """The recorded schema version, on a connection of its own (no pool to close)."""
    return await app.store.run_in_session(app.store.schema.version())


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-A/--app``, ``--dsn`` and ``--prefix``; the command receives ``target``.

    The same options on the ``chancy`` group (``chancy -A proj worker``, as in Celery)
    act as defaults for the command."""

    @click.option("-A", "--app", "app_spec", metavar="MODULE[:NAME]",
                  help="Your app: a module (its app, chancy or celery attribute) or module:name.")
    @click.option("--dsn", metavar="DSN",
                  help="Postgres to use [env CHANCY_DSN; default: the embedded per-user server].")
    @click.option("--prefix", metavar="PREFIX", help="Table prefix [default: the app's, else chancy_].")
    @functools.wraps(func)
    def wrapper(app_spec: str | None, dsn: str | None, prefix: str | None, **kwargs: Any) -> Any:
        defaults = click.get_current_context().find_object(Target) or Target()
        target = Target(
            app_spec=app_spec or defaults.app_spec,
            dsn=dsn or defaults.dsn or os.environ.get("CHANCY_DSN") or None,
            prefix=prefix or defaults.prefix,
        )
        try:
            with translated_errors(target.dsn):
                return func(target=target, **kwargs)
        finally:
            target.close()

    return wrapper


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(func)
