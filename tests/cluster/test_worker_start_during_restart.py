"""A worker started while Postgres restarts waits for it, as a running worker rides out
an outage, instead of exiting; a refusal (no such database) still fails at once."""

from __future__ import annotations

import os
import sys
import time

import psycopg
from cluster_support import RestartablePostgres

from chancy import Chancy

CLI_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli")
sys.path.insert(0, CLI_TESTS)
from cli_helpers import background, cli_env, run_jobs, stop  # noqa: E402


def test_a_worker_started_while_postgres_is_down_waits_and_then_works():
    pg = RestartablePostgres()
    try:
        _migrate(pg.dsn)
        pg.stop_server()
        with background(["worker", "--dsn", pg.dsn, "-A", "cli_tasks", "-Q", "default", "-P", "thread"],
                        env=cli_env()) as worker:
            time.sleep(3)  # it keeps trying meanwhile
            assert worker.poll() is None, worker.communicate()[0]
            pg.start_server()
            from chancy import Job

            [record] = run_jobs(pg.dsn, Job("cli_tasks.add", args=[2, 3]), timeout=60)
            code, out = stop(worker)
        assert record.result == 5
        assert code == 0, out
        assert "database unreachable" in out and "retrying" in out
    finally:
        pg.close()


def test_a_refusal_at_start_fails_at_once(dsn):
    missing = psycopg.conninfo.make_conninfo(dsn, dbname="no_such_database_here")
    started = time.monotonic()
    with background(["worker", "--dsn", missing, "-A", "cli_tasks", "-Q", "default"], env=cli_env()) as worker:
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 4, out
    assert "does not exist" in out
    assert time.monotonic() - started < 20


def _migrate(dsn: str) -> None:
    import asyncio

    async def run() -> None:
        app = Chancy(dsn)
        await app.migrate()
        await app.close()

    asyncio.run(run())
