"""``delay()`` inside the caller's transaction, and the worker CLI run as a subprocess
(``chancy worker -A proj -Q … -c … -P …``) the way a Celery deployment runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from chancy.compat import states
from tests.compat.proj import tasks

ROOT = Path(__file__).resolve().parents[2]


def test_delay_in_a_psycopg_transaction_exists_only_if_it_commits(celery_app, dsn):
    with psycopg.connect(dsn) as conn:
        rolled_back = tasks.add.apply_async((1, 2), connection=conn)
        conn.rollback()
    assert celery_app.chancy.get_job_sync(rolled_back.id) is None

    with psycopg.connect(dsn) as conn:
        committed = tasks.add.apply_async((1, 2), connection=conn)
        assert celery_app.chancy.get_job_sync(committed.id) is None  # not visible before commit
        conn.commit()
    assert celery_app.chancy.get_job_sync(committed.id) is not None
    assert committed.state == states.PENDING


def test_delay_on_commit_returns_the_result_handle(worker):
    result = tasks.add.delay_on_commit(2, 5)
    assert result.get(timeout=10) == 7


def test_an_async_connection_is_refused_with_advice(celery_app):
    from chancy.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="sync psycopg.Connection"):
        tasks.add.apply_async((1, 2), connection=object.__new__(psycopg.AsyncConnection))


def test_django_atomic_block_is_joined():
    pytest.importorskip("django", reason="Django is not installed; the psycopg path is tested above")


def test_worker_cli_runs_a_celery_project(celery_app, dsn):
    env = {**os.environ, "CHANCY_DSN": dsn, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "chancy.cli", "worker", "-A", "tests.compat.proj", "-Q", "default,high",
               "-c", "2", "-P", "threads", "-l", "INFO"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        results = [tasks.add.delay(i, i) for i in range(5)] + [tasks.mul.apply_async((6, 7), queue="high")]
        assert [r.get(timeout=30) for r in results] == [0, 2, 4, 6, 8, 42]
        chained = (tasks.add.s(1, 1) | tasks.mul.s(5)).delay()
        assert chained.get(timeout=30) == 10
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
