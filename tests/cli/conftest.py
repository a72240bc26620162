"""The ``chancy`` fixture: the CLI as a subprocess against the test's database."""

from __future__ import annotations

import subprocess
from typing import Callable

import pytest

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
