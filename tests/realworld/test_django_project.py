"""A real Django project, laid out as Celery's Django guide says (``proj/celery.py``,
``@shared_task`` in ``shop/tasks.py`` using the ORM), run unchanged both ways: under
``chancy worker -A proj`` in every pool, with the import switched to ``chancy.compat`` as
the migration guide says, and under stock ``celery worker`` on Chancy's broker and result
backend. Every command is a subprocess started as a user would, in the project's folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

pytest.importorskip("django", reason="the Django project needs Django (pip install -e '.[test]')")

PROJECT = Path(__file__).parent / "django_project"
#: Seconds a command of the project may take.
TIMEOUT = 90


def project_env(dsn: str, runner: str) -> dict[str, str]:
    """The environment of the project's commands: its database, and which Celery API
    ``proj/celery.py`` and ``shop/tasks.py`` import (``chancy`` or ``celery``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHANCY_DSN", "DJANGO_SETTINGS_MODULE")}
    env.update(PROJ_DATABASE_DSN=dsn, PROJ_TASK_RUNNER=runner, PYTHONWARNINGS="ignore")
    return env


def run(env: dict[str, str], *args: str) -> str:
    """Run ``python ARGS`` in the project; its output, or a failure showing it."""
    done = subprocess.run([sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """A worker of the project (``python ARGS``), stopped with SIGTERM after the block;
    its log is printed (shown when the test fails)."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, *args], cwd=PROJECT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # pool children left behind
        print(f"--- worker log ---\n{log.read_text()}")


def drive(env: dict[str, str], worker_process: subprocess.Popen, log: Path) -> dict[str, Any]:
    """Run ``shop.scenario`` through ``manage.py shell -c`` while the worker runs; what it
    printed. Fails at once, with the worker's log, if the worker exits meanwhile."""
    driver = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", "from shop.scenario import run; run()"],
                              cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while driver.poll() is None:
        if worker_process.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            driver.communicate()
            pytest.fail(f"the worker exited {worker_process.poll()} (or the driver hung):\n{log.read_text()}")
        time.sleep(0.1)
    out, err = driver.communicate()
    assert driver.returncode == 0, f"the scenario failed:\n{out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def orders(dsn: str) -> dict[str, tuple[int, str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT number, total, status, receipt_sent FROM shop_order").fetchall()
    return {number: (total, status, receipt) for number, total, status, receipt in rows}


def jobs(dsn: str) -> list[tuple[str, str, list[Any]]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT func, state, args FROM chancy_jobs ORDER BY func, state").fetchall()


#: The rows ``shop.scenario`` leaves, whichever worker ran its tasks: no declined order, and
#: a receipt only for the order whose transaction (and savepoint) committed.
ORDERS = {"A-1": (1200, "paid", False), "B-1": (30, "paid", True), "C-1": (5, "new", False),
          "E-1": (7, "eager", False)}
JOBS = sorted([
    ("shop.mark-paid", "succeeded", ["A-1"]),  # the task with a custom name
    ("shop.mark-paid", "succeeded", ["B-1"]),  # apply_async in transaction.on_commit
    ("shop.tasks.create_order", "failed", ["A-1", 5]),
    ("shop.tasks.create_order", "succeeded", ["A-1", 1200]),
    ("shop.tasks.lose_connection", "failed", []),
    ("shop.tasks.order_total", "succeeded", ["A-1"]),
    ("shop.tasks.send_receipt", "succeeded", ["B-1"]),  # delay_on_commit: once, for B-1 only
])


def check_the_shop(dsn: str, results: dict[str, Any]) -> None:
    """What ``shop.scenario`` must have seen and left. The tasks pushed at a commit are
    waited for here: nobody waits on their results."""
    assert isinstance(results["created"], int)
    assert results["paid"] == "paid"
    assert results["duplicate"] == "IntegrityError"  # refused by the unique index, reported
    assert results["lost"] == "OperationalError"  # the task's own session ended under it…
    assert results["total_after_loss"] == 1200  # …and the next task reconnected
    assert results["declined"] is True
    assert results["eager_total"] == 7
    deadline = time.monotonic() + 30
    while (orders(dsn), sorted(jobs(dsn))) != (ORDERS, JOBS):
        assert time.monotonic() < deadline, f"orders {orders(dsn)}\njobs {sorted(jobs(dsn))}"
        time.sleep(0.1)


@pytest.mark.parametrize("pool", ["process", "thread", "asyncio", "solo"])
def test_chancy_worker_runs_the_django_project(dsn: str, pool: str, tmp_path: Path) -> None:
    env = project_env(dsn, "chancy")
    run(env, "manage.py", "migrate", "-v0")
    run(env, "-m", "chancy.cli", "migrate", "-A", "proj")  # the DSN comes from Django's settings
    log = tmp_path / "worker.log"
    with worker(env, log, "-m", "chancy.cli", "worker", "-A", "proj", "-P", pool) as process:
        results = drive(env, process, log)
        check_the_shop(dsn, results)


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "2"]], ids=["solo", "prefork"])
def test_stock_celery_worker_runs_the_django_project_on_chancys_broker(dsn: str, pool: list[str],
                                                                        tmp_path: Path) -> None:
    env = project_env(dsn, "celery")
    run(env, "manage.py", "migrate", "-v0")
    run(env, "-m", "chancy.cli", "migrate", "--dsn", dsn)
    log = tmp_path / "worker.log"
    with worker(env, log, "-m", "celery", "-A", "proj", "worker", *pool, "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "info") as process:
        results = drive(env, process, log)
        check_the_shop(dsn, results)
