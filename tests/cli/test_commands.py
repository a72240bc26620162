"""The ``chancy`` commands as a user runs them: subprocesses against a real database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from click.testing import CliRunner

from chancy.cli import cli
from cli_helpers import HERE, Result, background, cli_command, cli_env, stop

COMMANDS = ["worker", "beat", "migrate", "push", "call", "result", "inspect", "status", "jobs", "purge", "info", "demo"]


def test_help_documents_every_command_and_the_exit_codes(chancy):
    result = chancy("--help", dsn_arg=None)
    assert result.code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.out
    assert "Exit codes:" in result.out and "5    the schema is not migrated" in result.out
    runner = CliRunner()
    for command in [*COMMANDS, "migrate status", "jobs list", "jobs show", "jobs retry", "jobs cancel",
                    *(f"inspect {name}" for name in ("active", "scheduled", "reserved", "registered", "ping", "stats"))]:
        sub = runner.invoke(cli, [*command.split(), "--help"])
        assert sub.exit_code == 0 and "Usage: " in sub.output, (command, sub.output)


def test_migrate_dry_run_changes_nothing_then_migrate_and_status(chancy):
    before = chancy("migrate", "status", "--json")
    assert before.code == 5, before.err
    assert before.json()["current"] == 0 and before.json()["pending"]
    assert chancy("status").code == 5  # read commands refuse an unmigrated database
    unmigrated_push = chancy("push", "cli_tasks.add", "--args", "[1, 2]")
    assert unmigrated_push.code == 5 and "run `chancy migrate`" in unmigrated_push.err

    dry = chancy("migrate", "--dry-run")
    assert dry.code == 0 and 'CREATE TABLE "chancy_jobs"' in dry.out
    assert chancy("migrate", "status").code == 5

    applied = chancy("migrate")
    assert applied.code == 0 and "applied migration(s) 1" in applied.out
    assert chancy("migrate").out.strip() == "schema already up to date"
    after = chancy("migrate", "status", "--json")
    assert after.code == 0 and after.json()["pending"] == []


def test_bad_dsn_and_unreachable_server_have_their_own_exit_codes(chancy):
    assert chancy("status", dsn_arg="mysql://x@y/z").code == 3
    unreachable = chancy("status", dsn_arg="postgresql://nobody@/db?host=/nonexistent-chancy&connect_timeout=2")
    assert unreachable.code == 4 and "Cannot connect" in unreachable.err


def test_unknown_app_is_a_configuration_error(chancy):
    result = chancy("status", "-A", "no_such_module_here")
    assert result.code == 3 and "no module named 'no_such_module_here'" in result.err


@pytest.fixture
def worker(dsn):
    """A ``chancy worker -A cli_tasks`` subprocess, logging JSON lines."""
    with background(["worker", "-A", "cli_tasks", "-c", "2", "-P", "thread", "-n", "cli-test@%h",
                     "--log-format", "json", "--dsn", dsn]) as process:
        yield process


def test_push_work_inspect_retry_cancel(migrated, worker):
    chancy = migrated
    ok = chancy("push", "cli_tasks.add", "--args", "[2, 3]", "--wait", "30", "--json")
    assert ok.code == 0, ok.err
    assert ok.json()["state"] == "succeeded" and ok.json()["result"] == 5

    # No --max-attempts: the task's own @app.task(max_attempts=2) applies.
    failed = chancy("push", "cli_tasks.explode", "--kwargs", '{"message": "boom-7"}', "--wait", "30")
    assert failed.code == 1
    job_id = failed.out.split()[1]
    shown = chancy("jobs", "show", job_id)
    assert shown.code == 0
    # Both attempts' tracebacks, each naming the error.
    assert shown.out.count("RuntimeError: boom-7") >= 2 and "--- attempt 2 failed" in shown.out
    listed = chancy("jobs", "list", "--state", "failed", "--json").json()
    assert [job["id"] for job in listed] == [job_id]

    status = chancy("status", "--json").json()
    assert {"queue": "default", "succeeded": 1, "failed": 1} .items() <= status["queues"][0].items()
    [row] = [w for w in status["workers"] if w["worker_id"].startswith("cli-test@")]
    assert row["heartbeat_age"] < 30 and row["alive"] and row["queues"] == ["default", "other"]
    twin = chancy("worker", "-A", "cli_tasks", "-n", row["worker_id"])
    assert twin.code == 7 and "already running" in twin.err

    code, output = stop(worker)
    assert code == 0, output
    assert "stopped cleanly" in output
    # One JSON line per job start and finish, with the job's fields.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith('{"ts"')]
    add_lines = [line for line in lines if line.get("task") == "cli_tasks.add"]
    started, finished = add_lines
    assert started["message"].endswith(" started") and "outcome" not in started
    assert started["job_id"] == finished["job_id"] and started["queue"] == "default" and started["attempt"] == 1
    assert finished["outcome"] == "succeeded" and finished["duration"] >= 0 and finished["error"] is None
    failures = [line for line in lines if line.get("task") == "cli_tasks.explode" and "outcome" in line]
    assert [f["outcome"] for f in failures] == ["retrying", "failed"]
    assert failures[-1]["level"] == "WARNING" and "boom-7" in failures[-1]["error"]

    assert chancy("jobs", "retry", job_id).code == 0
    assert chancy("jobs", "show", job_id, "--json").json()["state"] == "pending"
    assert chancy("jobs", "retry", job_id).code == 7  # pending: nothing to retry
    assert chancy("jobs", "cancel", job_id).code == 0
    assert chancy("jobs", "cancel", job_id).code == 7
    assert chancy("jobs", "show", str(uuid.uuid4())).code == 6
    assert chancy("jobs", "show", "not-a-uuid").code == 2


def test_push_validates_its_input(migrated):
    chancy = migrated
    assert chancy("push", "cli_tasks.add", "--args", "{not json").code == 2
    assert chancy("push", "cli_tasks.add", "--args", '{"a": 1}').code == 2
    assert chancy("push", "cli_tasks.add", "--kwargs", "[1]").code == 2
    assert chancy("push", "cli_tasks.add", "--priority", "high").code == 2
    assert chancy("jobs", "list", "--json").json() == []  # nothing was pushed


def test_purge_needs_force_and_deletes_only_waiting_jobs_of_the_queue(migrated):
    chancy = migrated
    pushed = [chancy("push", "cli_tasks.add", "--args", "[1, 1]", "-Q", "other", "--countdown", "600").out.strip()
              for _ in range(3)]
    kept = chancy("push", "cli_tasks.add", "--args", "[1, 1]").out.strip()
    listed = chancy("jobs", "list", "-Q", "other", "-t", "cli_tasks.add", "-s", "scheduled", "--json").json()
    assert sorted(job["id"] for job in listed) == sorted(pushed)
    assert chancy("jobs", "list", "-Q", "other", "-s", "pending", "--json").json() == []
    assert chancy("purge", "-Q", "other", stdin="").code == 2  # not a terminal, no --force
    purged = chancy("purge", "-Q", "other", "--force", "--json")
    assert purged.code == 0 and purged.json() == {"deleted": {"other": 3}, "total": 3}
    remaining = {job["id"] for job in chancy("jobs", "list", "--json").json()}
    assert remaining == {kept} and not remaining & set(pushed)
    assert chancy("purge", "--state", "running", "--force").code == 2


def test_info_names_the_server_and_schema(migrated):
    info = migrated("info", "--json")
    assert info.code == 0, info.err
    data = info.json()
    assert data["server_version"] and data["schema_version"] == data["schema_latest"]
    assert data["server"].startswith("given")


def _check_demo(result, jobs: int) -> None:
    assert result.code == 0, result.err
    assert f"{jobs} jobs finished" in result.out
    assert "send_email" in result.out and "render_report" in result.out
    assert "succeeded" in result.out and "failed" in result.out  # some reports are broken
    assert "SELECT queue, state, count(*)" in result.out
    assert "work " in result.err and "done " in result.err  # the progress line


def test_demo_on_a_given_database(chancy):
    _check_demo(chancy("demo", "--jobs", "150", timeout=90), 150)


def test_queue_pause_resume_declare_delete(migrated):
    chancy = migrated
    assert chancy("queue", "pause", "emails").code == 0
    assert chancy("queue", "pause", "reports", "--for", "600").code == 0
    assert chancy("queue", "declare", "bulk", "-c", "3", "--rate-limit", "100/60").code == 0
    # Regression: an open-ended pause is stored as 'infinity', which used to break every read.
    listed = {q["name"]: q for q in chancy("queue", "list", "--json").json()}
    assert listed["emails"]["paused"] and listed["emails"]["paused_until"] is None
    assert listed["reports"]["paused"] and listed["reports"]["paused_until"]
    assert (listed["bulk"]["concurrency"], listed["bulk"]["rate_limit"], listed["bulk"]["rate_period"]) == (3, 100, 60)
    status = {q["queue"]: q for q in chancy("status", "--json").json()["queues"]}
    assert status["emails"]["paused"] and not status["bulk"]["paused"]

    assert chancy("queue", "resume", "emails").code == 0
    assert chancy("queue", "resume", "emails").code == 7  # not paused any more
    assert chancy("queue", "resume", "nowhere").code == 6
    assert chancy("queue", "declare", "bulk", "--rate-limit", "lots").code == 2
    assert chancy("queue", "delete", "bulk").code == 0
    assert chancy("queue", "delete", "bulk").code == 6
    assert {q["name"] for q in chancy("queue", "list", "--json").json()} == {"emails", "reports"}


def test_worker_with_beat_fires_cron_schedules(migrated, dsn):
    from chancy import Chancy, Job
    from chancy.plugins.cron import Cron

    with Chancy(dsn) as app:
        Cron.schedule_sync(app, "tick", Job("cli_tasks.add", args=[20, 22]), every=0.5)
    with background(["worker", "-A", "cli_tasks", "-B", "-Q", "default", "--dsn", dsn]) as process:
        deadline = time.monotonic() + 30
        fired: list = []
        while not fired and time.monotonic() < deadline:
            fired = [job for job in migrated("jobs", "list", "--state", "succeeded", "--json").json()
                     if (job["unique_key"] or "").startswith("cron:tick:") and job["result"] == 42]
        assert fired, "the -B worker fired no cron job within 30s"
        code, output = stop(process)
        assert code == 0 and "beat     on" in output, output


def test_quickstart_example_on_a_celery_style_worker(migrated, dsn):
    """examples/quickstart.py: a Celery-style app run by `chancy worker -A` (prefork pool,
    children replaced every 2 jobs) and pushed to with .delay() from another process."""
    root = os.path.dirname(os.path.dirname(HERE))
    env = {**cli_env(), "CHANCY_DSN": dsn}
    with background(["worker", "-A", "examples.quickstart", "-P", "prefork", "-c", "2", "--max-tasks-per-child", "2"],
                    cwd=root, env=env) as worker:
        client = subprocess.run([sys.executable, "-m", "examples.quickstart"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        assert [line.split(" -> ")[1] for line in client.stdout.splitlines()] == [
            "0", "2", "4", "6", "8", "fetched https://example.com on attempt 2"]
        # `chancy push -A` on a Celery-style app routes like send_task: to its "celery" queue.
        pushed = subprocess.run(cli_command("push", "-A", "examples.quickstart", "examples.quickstart.add",
                                            "--args", "[20, 22]", "--wait", "30", "--json"),
                                cwd=root, env=env, capture_output=True, text=True, timeout=60)
        assert pushed.returncode == 0, pushed.stderr
        assert (json.loads(pushed.stdout)["queue"], json.loads(pushed.stdout)["result"]) == ("celery", 42)
        code, output = stop(worker)
        assert code == 0 and "executor prefork" in output, output


@pytest.fixture
def embedded_dir():
    """A state directory for the embedded server that its (unprivileged) user can reach."""
    parent = tempfile.mkdtemp(prefix="chancy-cli-test-")
    os.chmod(parent, 0o755)  # our own fresh directory, so that a root run can hand it over
    yield os.path.join(parent, "embedded")
    shutil.rmtree(parent, ignore_errors=True)


def test_quickstart_without_any_setup_runs_twice_on_the_embedded_server(embedded_dir):
    """Zero setup: no --dsn, no CHANCY_DSN: `chancy demo` starts the per-user embedded
    server (as root too, with a LANG naming a locale that is not generated), a second run
    works on the same data, and the server stops when the last command exits."""
    env = {**cli_env(), "CHANCY_EMBEDDED_DIR": embedded_dir, "LANG": "xx_YY.UTF-8", "LC_ALL": ""}

    def run(*args: str) -> Result:
        done = subprocess.run(cli_command(*args), env=env, capture_output=True, text=True, timeout=120)
        return Result(done.returncode, done.stdout, done.stderr)

    for _ in range(2):
        _check_demo(run("demo", "--jobs", "100"), 100)
    info = run("info", "--json").json()
    assert info["server"].startswith("embedded") and info["data_directory"] == os.path.join(embedded_dir, "pg")
    assert "host=/tmp/chancy-" in info["dsn"] and info["schema_version"] == info["schema_latest"]
    assert not os.path.exists(os.path.join(embedded_dir, "pg", "postmaster.pid"))  # the last holder stopped it


def test_max_memory_per_child_replaces_a_child_that_grew_too_big(migrated, dsn):
    """Regression for the process executor's new per-child memory cap: every spawned
    child holds more than 1 KiB, so each job runs in a fresh child."""
    with background(["worker", "-A", "cli_tasks", "-Q", "default", "-P", "process", "-c", "1",
                     "--max-memory-per-child", "1", "--dsn", dsn]) as process:
        pids = [migrated("push", "cli_tasks.pid", "--wait", "60", "--json").json()["result"] for _ in range(2)]
        assert pids[0] != pids[1]
        assert stop(process)[0] == 0
