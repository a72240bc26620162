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


def _configure_django(dsn: str) -> None:
    django = pytest.importorskip("django", reason="Django is not installed; the psycopg path is tested above")
    from django.conf import settings

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"],
                "USER": params.get("user", ""), "PASSWORD": params.get("password", ""),
                "HOST": params.get("host", ""), "PORT": params.get("port", "")}
    if settings.configured:
        from django.db import connections

        connections["default"].close()
        connections["default"].settings_dict.update(database)
    else:
        settings.configure(DATABASES={"default": database}, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()


def test_delay_inside_a_django_atomic_block_joins_its_transaction(celery_app, dsn):
    _configure_django(dsn)
    from django.db import connection, transaction

    try:
        with transaction.atomic():
            rolled_back = tasks.add.delay(1, 2)
            transaction.set_rollback(True)
        assert celery_app.chancy.get_job_sync(rolled_back.id) is None

        with transaction.atomic():
            committed = tasks.add.delay(3, 4)
            assert celery_app.chancy.get_job_sync(committed.id) is None  # not before the commit
            with connection.cursor() as cursor:  # but already there inside Django's transaction
                cursor.execute("SELECT count(*) FROM chancy_jobs WHERE id = %s", [committed.id])
                assert cursor.fetchone()[0] == 1
        assert celery_app.chancy.get_job_sync(committed.id) is not None

        outside = tasks.add.delay(5, 6)  # autocommit: pushed at once
        assert celery_app.chancy.get_job_sync(outside.id) is not None
    finally:
        connection.close()


def test_delay_asks_nothing_of_an_installed_but_unconfigured_django():
    """kombu imports Django wherever it is installed; an app that does not use it must not
    pay for importing ``django.db`` and catching its configuration error on each push."""
    probe = ("import sys, django\n"
             "from chancy.compat.transactions import django_connection\n"
             "assert django_connection() is None\n"
             "print('django.db' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
