"""No command prints a database password: not for a DSN psycopg cannot parse, not for a
server it cannot reach, not in a banner or a summary. Each message still says what is wrong."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess

import pytest

from cli_helpers import HERE, Result, background, cli_command, cli_env, stop

SECRET = "s3cret-Zq9"
COMMANDS = [("status",), ("info",), ("migrate",), ("worker",), ("demo", "--jobs", "1")]

#: Malformed DSNs, each with what its error message must still say.
MALFORMED = {
    f"postgresql://u:{SECRET}@localhost:notaport/db": "port 'notaport' is not a number",
    f"mysql://u:{SECRET}@h/db": "unsupported scheme 'mysql://'",
    f"host=x password={SECRET} port=abc": "port 'abc' is not a number",
    f"host=x password='{SECRET}": "unterminated quoted string",
    f"postgresql://u:{SECRET}%zz@h/db": "invalid percent-encoded token",
}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_all(cases: list[tuple[str, ...]]) -> list[Result]:
    """Run each command line as a subprocess, a few at a time (each mostly starts Python)."""
    def run(args: tuple[str, ...]) -> Result:
        done = subprocess.run(cli_command(*args), cwd=HERE, env=cli_env(), capture_output=True, text=True,
                              timeout=90)
        return Result(done.returncode, done.stdout, done.stderr)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, cases))


def assert_hidden(result: Result, context: object) -> None:
    assert SECRET not in result.out + result.err, (context, result)


def test_malformed_dsns_are_reported_without_their_password():
    cases = [(*command, "--dsn", dsn) for dsn in MALFORMED for command in COMMANDS]
    for case, result in zip(cases, run_all(cases)):
        assert_hidden(result, case)
        assert result.code == 3 and MALFORMED[case[-1]] in result.err, (case, result)


def test_unreachable_servers_are_reported_without_their_password():
    port = closed_port()
    dsns = [f"postgresql://u:{SECRET}@127.0.0.1:{port}/db?connect_timeout=2",
            f"postgresql://u@127.0.0.1:{port}/db?password={SECRET}&connect_timeout=2",
            f"host=127.0.0.1 port={port} password='{SECRET} x' connect_timeout=2"]
    # The worker waits for an unreachable database (60 s by default), logging each retry:
    # a few seconds show those lines too.
    cases = [(*command, *(("--startup-timeout", "3") if command == ("worker",) else ()), "--dsn", dsn)
             for dsn in dsns for command in COMMANDS]
    for case, result in zip(cases, run_all(cases)):
        assert_hidden(result, case)
        assert result.code == 4 and "Cannot connect to Postgres" in result.err, (case, result)
        if case[0] == "worker":
            assert "database unreachable" in result.err and "retrying" in result.err, (case, result)


@pytest.fixture
def dsn_with_password(dsn: str) -> str:
    """The test database's DSN with a password added (its server trusts local clients, so
    the password is ignored and every command succeeds)."""
    return f"{dsn}&password={SECRET}" if "?" in dsn else f"{dsn}?password={SECRET}"


def test_info_demo_and_the_worker_banner_show_the_dsn_masked(dsn_with_password):
    info, demo = run_all([("info", "--dsn", dsn_with_password), ("demo", "--jobs", "5", "--dsn", dsn_with_password)])
    for result in (info, demo):
        assert_hidden(result, result)
        assert result.code == 0 and "password=***" in result.out + result.err, result
    assert "psql" in demo.out and "PGPASSWORD" in demo.out  # says how to use the masked commands
    with background(["worker", "--dsn", dsn_with_password]) as worker:
        for line in worker.stdout:
            if "postgres" in line:  # the banner's server line
                break
        code, output = stop(worker)
    assert SECRET not in line + output and "password=***" in line
