"""The ``chancy`` fixture (the CLI as a subprocess) and ``cli_run`` (in this process),
against the test's database."""

from __future__ import annotations

import subprocess
from typing import Callable

import pytest
from click.testing import CliRunner

from chancy.cli import cli
from cli_helpers import HERE, Result, cli_command, cli_env


@pytest.fixture
def chancy(dsn: str) -> Callable[..., Result]:
    """``chancy(*args)`` runs the CLI with ``--dsn`` of this test's database appended to
    the command (``dsn=None`` leaves it out) and returns its exit code and output."""

    def run(*args: str, dsn_arg: str | None = dsn, timeout: float = 90, stdin: str | None = None) -> Result:
        command = cli_command(*args, *(["--dsn", dsn_arg] if dsn_arg else []))
        done = subprocess.run(command, cwd=HERE, env=cli_env(), capture_output=True, text=True,
                              timeout=timeout, input=stdin)
        return Result(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def migrated(chancy: Callable[..., Result]) -> Callable[..., Result]:
    """``chancy`` on a migrated database."""
    assert chancy("migrate").code == 0
    return chancy


@pytest.fixture
def cli_run(dsn: str) -> Callable[..., Result]:
    """``cli_run(*args)``: the CLI in this process (no interpreter start: fast), with
    ``--dsn`` of this test's database (``dsn=None`` leaves it out). Not for ``-A`` with a
    DSN (the app would keep the DSN in this process's environment), nor for a Celery-style
    app (it would become the current app of the tests that follow)."""

    def run(*args: str, dsn_arg: str | None = dsn) -> Result:
        done = CliRunner().invoke(cli, [*args, *(["--dsn", dsn_arg] if dsn_arg else [])])
        return Result(done.exit_code, done.stdout, done.stderr)

    return run
