"""Celery projects as Celery's docs lay them out, with the import switched as the
migration guide says (``from chancy.compat import Celery``), run the ways Celery's docs
run them, under every pool, each worker a subprocess and each producer another:

- ``tutorial/tasks.py``, "First steps with Celery": ``python tasks.py worker`` (the
  module's ``app.start()``), ``python run_worker.py`` (``app.worker_main(argv)``) and
  ``chancy worker -A tasks``; a producer's ``from tasks import add; add.delay(2, 2)``
  reaches it (the script's tasks are named ``tasks.add`` in the worker, as in Celery).
- ``pkg_project/proj``, "Using Celery in your application": the app in
  ``proj/celery.py``, tasks found by ``autodiscover_tasks``, one under a custom name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_helpers import cli_command  # noqa: E402
from worker_output import OutputWatcher  # noqa: E402

HERE = Path(__file__).parent
TUTORIAL = HERE / "tutorial"
PACKAGE = HERE / "pkg_project"
POOLS = ["process", "thread", "asyncio", "solo"]
#: Seconds a worker may take to start, or a producer to get its results.
TIMEOUT = 60


def project_env(dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHANCY_DSN"}
    return {**env, "CHANCY_DSN": dsn, "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def env(dsn: str) -> dict[str, str]:
    """The projects' environment, on a migrated database."""
    env = project_env(dsn)
    subprocess.run(cli_command("migrate"), env=env, check=True, capture_output=True, timeout=TIMEOUT)
    return env


@contextlib.contextmanager
def running_worker(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[OutputWatcher]:
    """A worker started by ``command`` in ``cwd``, ready for jobs; SIGTERM after the block,
    which must stop it cleanly (exit 0)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = OutputWatcher(process)
    try:
        output.wait_for("started on queues", timeout=TIMEOUT)
        yield output
        process.send_signal(signal.SIGTERM)
        assert output.exit_code(timeout=TIMEOUT) == 0, output.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def produce(code: str, cwd: Path, env: dict[str, str]) -> str:
    """Run producer ``code`` with ``python -c`` in ``cwd``; what it printed."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT + 30)
    assert done.returncode == 0, f"producer exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


TUTORIAL_WORKERS = {
    "python tasks.py worker": [sys.executable, "tasks.py", "worker"],
    "app.worker_main": [sys.executable, "run_worker.py"],
    "chancy worker -A tasks": cli_command("worker", "-A", "tasks"),
}


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("launch", TUTORIAL_WORKERS)
def test_the_first_steps_tutorial_runs_as_celery_docs_say(env, launch, pool):
    with running_worker([*TUTORIAL_WORKERS[launch], "-P", pool], TUTORIAL, env) as output:
        answer = produce("from tasks import add; print(add.delay(2, 2).get(timeout=60))", TUTORIAL, env)
        assert answer == "4", output.text
        assert "task=tasks.add" in output.text


PACKAGE_PRODUCER = """
from proj.celery import app
from proj.tasks import mul, send, xsum
print(send.delay("ada").get(timeout=60))
print(mul.delay(6, 7).get(timeout=60))
print(xsum.delay([1, 2, 3]).get(timeout=60))
print(app.send_task("emails.send", args=["bob"]).get(timeout=60))
"""


@pytest.mark.parametrize("pool", POOLS)
def test_a_package_project_with_custom_task_names_runs_under_every_pool(env, pool):
    with running_worker(cli_command("worker", "-A", "proj", "-P", pool), PACKAGE, env):
        answers = produce(PACKAGE_PRODUCER, PACKAGE, env).splitlines()
    assert answers == ["sent to ada", "42", "6", "sent to bob"]


def test_a_package_project_with_the_app_option_first(env):
    """``chancy -A proj worker``: Celery's order of options."""
    with running_worker(cli_command("-A", "proj", "worker", "-P", "process"), PACKAGE, env):
        answers = produce(PACKAGE_PRODUCER, PACKAGE, env).splitlines()
    assert answers == ["sent to ada", "42", "6", "sent to bob"]
