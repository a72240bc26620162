"""Rows an earlier result backend parked at ``scheduled_at = 'infinity'`` (a state stored
for a task Chancy's broker never saw) could be loaded by no reader: 'timestamp too large'
in the CLI, revoke and the dashboard. Migration 6 makes every infinite time of a job a
loadable one, 'never' still never due."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import psycopg
import pytest

from chancy import Chancy, JobState


def _insert(conn: psycopg.Connection, job_id: uuid.UUID, scheduled_at: str, expires_at: str | None) -> None:
    conn.execute(
        "INSERT INTO chancy_jobs (id, queue, func, state, attempts, scheduled_at, expires_at, meta) "
        "VALUES (%s, 'celery', 'celery.unknown', 'scheduled', 1, %s::timestamptz, %s::timestamptz, %s)",
        (job_id, scheduled_at, expires_at, json.dumps({"celery": {"state": "STARTED", "info": {"pid": 1}}})),
    )


async def test_migration_6_makes_infinite_job_times_loadable(dsn):
    app = Chancy(dsn)
    try:
        await app.migrate(to_version=5)
        parked, dated = uuid.uuid4(), uuid.uuid4()
        with psycopg.connect(dsn, autocommit=True) as conn:
            _insert(conn, parked, "infinity", None)  # what the earlier backend wrote
            _insert(conn, dated, "-infinity", "infinity")
        with psycopg.connect(dsn) as conn, pytest.raises(Exception, match="too large|too small|out of range"):
            conn.execute("SELECT scheduled_at FROM chancy_jobs WHERE id = %s", (parked,)).fetchall()  # the poison

        assert await app.migrate(to_version=6) == [6]
        await app.migrate()  # the later ones, which today's readers need
        shown = subprocess.run([sys.executable, "-m", "chancy.cli", "jobs", "show", str(parked), "--json",
                                "--dsn", dsn], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["scheduled_at"].startswith("9999-12-31")

        record = app.get_job_sync(parked)
        assert record.state is JobState.SCHEDULED and record.scheduled_at.year == 9999  # still never due
        other = app.get_job_sync(dated)
        assert other.scheduled_at.year == 1 and other.expires_at.year == 9999  # '-infinity': due long ago
        with psycopg.connect(dsn) as conn:
            [(left,)] = conn.execute(
                "SELECT count(*) FROM chancy_jobs WHERE NOT (isfinite(scheduled_at) AND isfinite(created_at) "
                "AND isfinite(coalesce(expires_at, now())))").fetchall()
        assert left == 0
    finally:
        await app.close()

