"""In-process parts of the CLI: finding ``-A`` apps, ``-c``/``-P`` queue overrides, log
lines, the progress line."""

from __future__ import annotations

import importlib
import io
import json
import logging
import sys
import textwrap
import time

import click
import pytest

from chancy import Chancy, Queue, logs
from chancy.cli.loading import find_app
from chancy.cli.progress import Progress
from chancy.cli.worker import configure_queues
from chancy.errors import ConfigurationError
from chancy.executors import process
from chancy.executors.process import ChildLimits, ProcessExecutor


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throwaway importable project: ``write("pkg/mod.py", source)``. The modules found
    as apps are forgotten after the test: process-pool children of later tests would try
    to import them."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(process, "app_modules", [])
    before = set(sys.modules)

    def write(path: str, source: str) -> None:
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))

    yield write
    for name in set(sys.modules) - before:
        del sys.modules[name]


APP = "from chancy import Chancy\n{name} = Chancy('postgresql://x@localhost/db')\n"


def test_find_app_accepts_celery_style_specs(project):
    project("proja/__init__.py", APP.format(name="app"))
    project("projb/__init__.py", "")
    project("projb/celery.py", APP.format(name="celery"))
    project("projc.py", APP.format(name="my_chancy") + "other = 1\n")
    project("proje/__init__.py", APP.format(name="unnamed"))
    project("proje/celery.py", APP.format(name="app"))
    project("projd.py", "from chancy import Chancy\n"
                        "class Compat:\n    def __init__(self): self.chancy = Chancy('postgresql://x@h/db')\n"
                        "worker_app = Compat()\n")
    import_ = importlib.import_module
    assert find_app("proja") is import_("proja").app
    assert find_app("projb") is import_("projb.celery").celery  # the celery submodule, like Celery
    assert find_app("projb.celery") is import_("projb.celery").celery
    assert find_app("projc") is import_("projc").my_chancy  # the only app in the module
    assert find_app("proje") is import_("proje.celery").app  # Celery's order: the submodule first
    assert find_app("projc:my_chancy") is find_app("projc.my_chancy")
    assert find_app("projd:worker_app").chancy is import_("projd").worker_app.chancy


def test_find_app_says_what_is_wrong(project):
    project("twoapps.py", APP.format(name="one") + "two = Chancy('postgresql://x@localhost/db')\n")
    project("noapp.py", "x = 1\n")
    project("broken.py", "import no_such_dependency_xyz\n")
    with pytest.raises(ConfigurationError, match="holds 2 apps; say which with -A twoapps:NAME"):
        find_app("twoapps")
    with pytest.raises(ConfigurationError, match="found no Chancy or Celery app"):
        find_app("noapp")
    with pytest.raises(ConfigurationError, match="has no attribute 'nope'"):
        find_app("noapp:nope")
    with pytest.raises(ConfigurationError, match="neither a Chancy app"):
        find_app("noapp:x")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):  # a real import bug surfaces
        find_app("broken")


def test_worker_flags_override_queue_settings():
    app = Chancy("postgresql://x@localhost/db", plugins=[Queue("a", concurrency=3, polling_interval=0.3), Queue("b")])
    assert configure_queues(app, None, None, None) == ["a", "b"]
    assert app.queues["a"].concurrency == 3
    assert configure_queues(app, ["a", "new"], 5, "process", ChildLimits(10, 2048)) == ["a", "new"]
    for name in ("a", "new"):
        queue = app.queues[name]
        assert queue.concurrency == 5 and queue.app is app
        executor = queue.make_executor()
        assert isinstance(executor, ProcessExecutor)
        assert (executor.maximum_jobs_per_worker, executor.maximum_memory_per_worker) == (10, 2048 * 1024)
    assert app.queues["a"].polling_interval == 0.3
    with pytest.raises(click.UsageError, match="apply to the process pool"):
        configure_queues(app, ["b"], None, "thread", ChildLimits(max_memory_kib=1))
    configure_queues(app, ["b"], 8, "solo")
    assert app.queues["b"].concurrency == 1  # solo runs one job at a time


def test_json_log_lines_carry_the_extra_fields():
    stream = io.StringIO()
    logs.setup("DEBUG", "json", stream=stream)
    try:
        logging.getLogger("chancy.worker").info("job %s done", "abc", extra={"job_id": "abc", "duration": 0.5})
        logging.getLogger("chancy.worker").debug("hidden?")
        logs.setup("WARNING", "text", stream=stream)
        logging.getLogger("chancy.worker").info("filtered out")
    finally:
        logs.setup("WARNING", "text", stream=sys.stderr)
    first, second = stream.getvalue().splitlines()[:2]
    record = json.loads(first)
    assert record["message"] == "job abc done" and record["job_id"] == "abc" and record["duration"] == 0.5
    assert record["level"] == "INFO" and record["logger"] == "chancy.worker"
    assert json.loads(second)["message"] == "hidden?"
    assert "filtered out" not in stream.getvalue()
    with pytest.raises(ValueError, match="not one of"):
        logs.setup("LOUD")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_on_a_terminal_and_throttles_elsewhere(monkeypatch):
    # A machine booted less than plain_interval ago: the monotonic clock starts near 0
    # (a fresh CI machine), and the first plain line must still be printed.
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    terminal = _Terminal()
    progress = Progress("work ", 200, stream=terminal)
    progress.update(50, {"done": 48, "failed": 2})
    progress.update(200, {"done": 198, "failed": 2}, final=True)
    first, second = terminal.getvalue().split("\r")[1:]
    assert "[#######.....................] 50/200  25% | done 48 failed 2 |" in first
    assert second.startswith("work  [############################] 200/200 100%") and second.endswith("\n")

    log = io.StringIO()
    plain = Progress("push ", 10, stream=log, plain_interval=3600)
    for done in range(1, 11):
        plain.update(done, final=done == 10)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("push  [##") and "10/10 100%" in lines[1]  # first and last only


def test_celery_max_tasks_and_memory_per_child_configure_the_process_pool_only():
    from chancy.compat import Celery, worker_app

    celery_app = Celery("limits", broker="postgresql://x@localhost/db", set_as_current=False)
    celery_app.conf.worker_max_tasks_per_child = 3
    celery_app.conf.worker_max_memory_per_child = 4096
    app = worker_app(celery_app, ["a"], 2, "prefork", ChildLimits(max_tasks=5))
    executor = app.queues["a"].make_executor()
    assert isinstance(executor, ProcessExecutor)  # the flag wins; the setting fills the rest
    assert (executor.maximum_jobs_per_worker, executor.maximum_memory_per_worker) == (5, 4096 * 1024)
    with pytest.warns(UserWarning, match="apply to the process pool"):
        worker_app(celery_app, ["b"], 2, "threads")
    assert not isinstance(app.queues["b"].make_executor(), ProcessExecutor)
    with pytest.raises(ConfigurationError, match="not the thread pool"):
        worker_app(celery_app, ["c"], 2, "threads", ChildLimits(max_tasks=1))
