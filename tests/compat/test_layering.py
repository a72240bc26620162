"""The Celery layer's shape, without a database: what a call becomes (job_rows), the
per-thread task state (local), and ``app.start()`` reaching the ``chancy`` program through
its console script rather than by importing the CLI (which imports this layer)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from chancy.compat import Celery, chain
from chancy.compat.app.task import Context
from chancy.compat.command_line import app_spec_of, program, run_program
from chancy.compat.job_rows import job_for, jobs_and_result
from chancy.compat.local import current_task_and_request, request_of, running
from chancy.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]

app = Celery("layering", set_as_current=False)
app.conf.task_queues = ("celery", "fast")


@app.task
def add(x: int, y: int = 0) -> int:
    return x + y


def test_job_for_translates_a_signature_into_its_row():
    sig = add.s(1, y=2).set(queue="fast", priority=300, countdown=60, headers={"h": 1}, time_limit=9)
    job = job_for(app, sig)
    assert (job.func, job.args, job.kwargs, job.queue) == (add.name, (1,), {"y": 2}, "fast")
    assert job.priority == 255  # clamped to RabbitMQ's range
    assert job.scheduled_at > datetime.now(timezone.utc)
    assert job.limits[0].value == 9
    celery = job.meta["celery"]
    assert celery["headers"] == {"h": 1} and celery["root_id"] == str(job.id) and celery["eta"] is True


def test_job_for_refuses_arguments_the_task_cannot_take():
    with pytest.raises(TypeError, match="wrong arguments"):
        job_for(app, add.s(1, 2, 3))


def test_one_plain_signature_is_one_job_and_a_chain_is_planned():
    [job], result = jobs_and_result(app, add.s(1))
    assert result.id == str(job.id) and "canvas" not in job.meta
    jobs, result = jobs_and_result(app, chain(add.s(1), add.s(2)))
    first, second = jobs
    assert result.id == str(second.id)
    assert first.meta["canvas"]["then"] == [str(second.id)]
    assert second.meta["canvas"]["after"] == [str(first.id)] and second.scheduled_at.year == 9999  # parked


def test_the_running_request_is_per_task_and_nested():
    outer, inner = Context(id="outer"), Context(id="inner")
    assert current_task_and_request() is None and request_of(add) is None
    with running(add, outer):
        with running(add, inner):  # a task calling itself inline
            assert current_task_and_request() == (add, inner)
            assert add.request is inner
        assert add.request is outer
    assert current_task_and_request() is None and add.request.id is None


def test_the_program_is_the_installed_chancy_script():
    from chancy.cli import main

    assert program() is main


def test_an_app_is_named_by_its_module_level_name():
    assert app_spec_of(app) == f"{__name__}:app"
    with pytest.raises(ConfigurationError, match="no module-level name"):
        app_spec_of(Celery("nameless", set_as_current=False))


def test_start_runs_a_command_and_returns_zero_or_exits_with_its_code(capsys):
    assert run_program(app, ["--help"]) == 0
    assert "Usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        run_program(app, ["no-such-command"])
    assert exited.value.code == 2


@pytest.mark.parametrize("first", ["chancy.compat.local", "chancy.compat.job_rows", "chancy.compat.protocol",
                                   "chancy.compat.signals", "chancy.compat.app.task"])
def test_any_module_of_the_layer_loads_first_without_the_cli(first):
    """Whatever is imported first, the layer loads whole (its package runs first) and
    stands for an app before any was made; the CLI, which sits above it, stays unloaded."""
    probe = textwrap.dedent(f"""
        import sys, {first}
        from chancy.compat import current_app
        assert current_app.main == "default", current_app.main
        print("chancy.cli" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
