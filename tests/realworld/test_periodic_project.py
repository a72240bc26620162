"""Issue 25, end to end: two Celery projects (periodic/appA.py, periodic/appB.py) on one
database, each with CLI-started ``chancy worker -A … -B`` and ``chancy beat -A … --once``.
Each project's schedules are its own both ways (synced, fired and deleted only by it, alike
entry names included), a firer that comes back after downtime fires one catch-up job,
and a project whose beat_schedule is emptied unschedules its own entries only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Any, Iterator

import psycopg

PROJECTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "periodic")
PERIOD = 1.0  # both projects' "tick" entry


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHANCY_DSN", "PERIODIC_EMPTY_SCHEDULE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECTS, env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"
    return {**env, **extra}


def _chancy(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "chancy.cli", *args, "--dsn", dsn], cwd=PROJECTS,
                          env=_env(**env), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@contextlib.contextmanager
def _worker(dsn: str, project: str, **env: str) -> Iterator[subprocess.Popen]:
    """``chancy worker -A project -B``, stopped by SIGTERM at the end of the block."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chancy.cli", "worker", "-A", project, "-B", "-P", "threads", "-c", "2",
         "--dsn", dsn], cwd=PROJECTS, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        assert process.returncode == 0, out


def _query(dsn: str, statement: str, *params: Any) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def _now(dsn: str) -> datetime:
    return _query(dsn, "SELECT now()")[0][0]


def _firings(dsn: str, project: str) -> list[tuple[datetime, datetime]]:
    """(tick, created_at) of each job a project's ``tick`` schedule pushed, by tick."""
    rows = _query(dsn, "SELECT unique_key, created_at FROM chancy_jobs WHERE unique_key LIKE 'cron:celery:tick:%%' "
                       "AND func = %s", f"{project}.tick")
    ticks = [(datetime.fromisoformat(key.removeprefix("cron:celery:tick:").removesuffix(f"@{project}")), created)
             for key, created in rows]
    return sorted(ticks)


def _wait_for_firings(dsn: str, project: str, count: int, since: datetime | None = None) -> None:
    deadline = time.monotonic() + 60
    while sum(1 for _, created in _firings(dsn, project) if since is None or created > since) < count:
        assert time.monotonic() < deadline, f"{project} fired fewer than {count} ticks in 60 s"
        time.sleep(0.1)


def _schedules(dsn: str) -> set[tuple[str, str]]:
    return set(_query(dsn, "SELECT name, job->>'func' FROM chancy_cron"))


def test_two_projects_on_one_database_keep_their_schedules_apart(dsn):
    _chancy(dsn, "migrate")
    _chancy(dsn, "beat", "-A", "appA", "--once")
    once_b = _chancy(dsn, "beat", "-A", "appB", "--once", "-j")
    # B's beat neither deleted nor overwrote A's entries (one of them named like B's).
    assert _schedules(dsn) == {("celery:tick", "appA.tick"), ("celery:nightly", "appA.tick"),
                               ("celery:tick", "appB.tick")}
    assert "to namespace 'appB'" in once_b.stderr and '"appA' not in once_b.stdout  # B lists its own only

    with _worker(dsn, "appB") as worker_b:
        with _worker(dsn, "appA"):
            _wait_for_firings(dsn, "appA", 2)
            _wait_for_firings(dsn, "appB", 2)
        # A is down: B's worker (and firer) goes on and never fires A's schedules.
        a_stopped = _now(dsn)
        time.sleep(4.5 * PERIOD)
        assert [tick for tick, created in _firings(dsn, "appA") if created > a_stopped] == []
        assert sum(1 for _, created in _firings(dsn, "appB") if created > a_stopped) >= 3

        # A comes back after 4+ missed periods: one catch-up job, then its grid goes on.
        last_before = max(tick for tick, created in _firings(dsn, "appA") if created <= a_stopped)
        with _worker(dsn, "appA"):
            _wait_for_firings(dsn, "appA", 3, since=a_stopped)
            after = [(tick, created) for tick, created in _firings(dsn, "appA") if created > a_stopped]
            catch_up_tick, catch_up_created = after[0]
            assert (catch_up_tick - last_before).total_seconds() >= 4 * PERIOD
            burst = [tick for tick, created in after if created == catch_up_created]  # one pass, one now()
            assert burst == [catch_up_tick], f"catch-up pushed {len(burst)} jobs at once: {burst}"
            assert [(b[0] - a[0]).total_seconds() for a, b in zip(after, after[1:])] == [PERIOD] * (len(after) - 1)

            # B is down: A's firer never fires B's schedule.
            worker_b.send_signal(signal.SIGTERM)
            assert worker_b.wait(60) == 0
            b_stopped = _now(dsn)
            time.sleep(2.5 * PERIOD)
            assert [tick for tick, created in _firings(dsn, "appB") if created > b_stopped] == []
            assert sum(1 for _, created in _firings(dsn, "appA") if created > b_stopped) >= 2

            # B's beat_schedule is emptied: its worker's start unschedules B's entry, not A's.
            with _worker(dsn, "appB", PERIODIC_EMPTY_SCHEDULE="1"):
                deadline = time.monotonic() + 60
                while ("celery:tick", "appB.tick") in _schedules(dsn):
                    assert time.monotonic() < deadline, "the emptied project's entry was not unscheduled"
                    time.sleep(0.1)
            _chancy(dsn, "beat", "-A", "appB", "--once", PERIODIC_EMPTY_SCHEDULE="1")
            assert _schedules(dsn) == {("celery:tick", "appA.tick"), ("celery:nightly", "appA.tick")}

    # Every job went to its own project's queue; none failed as another project's task.
    assert _query(dsn, "SELECT DISTINCT func, queue FROM chancy_jobs ORDER BY 1") == [
        ("appA.tick", "appA"), ("appB.tick", "appB")]
    assert _query(dsn, "SELECT count(*) FROM chancy_jobs WHERE state NOT IN ('succeeded', 'pending')") == [(0,)]
