"""chancy.contrib.django in a real Django project (``project/``) on real Postgres: one
``manage.py chancy worker`` serves a queue per pool (process, thread, asyncio, solo), and
one Django process (``orders/scenario.py``) drives every check against it — Django's task
framework on Chancy's backend (django.tasks on Django 6, the django-tasks backport on 5.2),
a DjangoChancy app's native task and a chancy.compat Celery task, each pushed inside
``transaction.atomic()`` blocks that commit or roll back, validation at enqueue, results,
and the admin's pages and permission-checked actions. Every command is a subprocess started
as a user would, in the project's folder."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("django", reason="the Django app needs Django (pip install -e '.[test]')")

PROJECT = Path(__file__).parent / "project"
POOLS = ["process", "thread", "asyncio", "solo"]
#: Seconds a command of the project may take (the machine is shared).
TIMEOUT = 120
#: The project's database password: the test server trusts local connections, so any
#: password connects; none may ever be printed.
PASSWORD = "pw-never-shown-4711"


def project_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHANCY_DSN", "DJANGO_SETTINGS_MODULE")}
    env.update(PROJ_DATABASE_DSN=dsn, PROJ_DATABASE_PASSWORD=PASSWORD, PYTHONWARNINGS="ignore", **extra)
    return env


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``manage.py chancy worker`` on the project's four queues, stopped with SIGTERM."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "manage.py", "chancy", "worker", "-l", "info"], cwd=PROJECT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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


def drive(env: dict[str, str], worker_process: subprocess.Popen, log: Path) -> dict[str, Any]:
    """Run ``orders.scenario`` while the worker runs; what it observed."""
    driver = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", "from orders.scenario import run; run()"],
                              cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT
    while driver.poll() is None:
        if worker_process.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            out, err = driver.communicate()
            pytest.fail(f"the worker exited {worker_process.poll()} (or the driver hung):\n{err}\n{log.read_text()}")
        time.sleep(0.1)
    out, err = driver.communicate()
    assert driver.returncode == 0, f"the scenario failed:\n{out}\n{err}\n--- worker log ---\n{log.read_text()}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def project(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The project migrated (Django's tables, then Chancy's through ``manage.py chancy
    migrate``), its worker run through the whole scenario: the observations, the worker's
    log and the project's environment."""
    from chancy.store.pg.server import create_database, drop_database

    name = f"chancy_django_{uuid.uuid4().hex}"
    env = project_env(create_database(pg_admin_dsn, name))
    log = tmp_path_factory.mktemp("django") / "worker.log"
    try:
        manage(env, "migrate", "-v0")
        migrated = manage(env, "chancy", "migrate")
        with worker(env, log) as process:
            seen = drive(env, process, log)
        yield {"seen": seen, "log": log.read_text(), "env": env, "migrate": migrated.stdout + migrated.stderr}
    finally:
        drop_database(pg_admin_dsn, name)


@pytest.mark.parametrize("pool", POOLS)
def test_the_frameworks_tasks_run_on_every_pool(project: dict[str, Any], pool: str) -> None:
    seen = project["seen"][pool]
    assert seen["add"] == {"status": "SUCCESSFUL", "value": 5, "errors": [], "attempts": 1, "timed": True}
    assert seen["add_async"]["status"] == "SUCCESSFUL" and seen["add_async"]["value"]["sum"] == 5
    assert seen["fail"]["status"] == "FAILED"
    assert seen["fail"]["errors"] == [["ValueError", f"ValueError: boom on {pool}"]]
    # takes_context: the context holds the running job's own result
    assert seen["whoami"]["value"] == {"id": seen["whoami"]["value"]["id"], "label": pool, "status": "RUNNING",
                                       "attempt": 1}
    assert seen["whoami_id_matches"] is True
    # a return value the framework cannot normalize to JSON fails the task, as the framework says
    assert seen["unstorable"]["status"] == "FAILED" and seen["unstorable"]["errors"][0][0] == "TypeError"


@pytest.mark.parametrize("pool", POOLS)
def test_pushes_join_djangos_transaction_for_every_api(project: dict[str, Any], pool: str) -> None:
    seen = project["seen"][pool]
    row, lookup = seen["framework_rolled_back"]
    assert row is None and lookup.startswith("TaskResultDoesNotExist")
    assert seen["framework_committed"]["status"] == "SUCCESSFUL"
    assert seen["native_rolled_back"] is None and seen["native_committed"] == "succeeded"
    assert seen["compat_rolled_back"] is None and seen["compat_committed"] == 42
    # only the committed order exists; the native task tagged its order on this pool's queue
    assert seen["orders"] == [[f"C-{pool}", 2, ""], [f"N-{pool}", 0, pool]]


def test_pushes_join_an_atomic_block_on_another_alias(project: dict[str, Any]) -> None:
    """Regression: the compat API joined only a block on Django's default alias; inside
    atomic(using="jobs") it pushed at once, and the job outlived the rolled-back block."""
    seen = project["seen"]["other_alias"]
    assert seen["compat"] == [None, "pending"]
    assert seen["native"] == [None, "pending"]


def test_invalid_tasks_are_refused_at_enqueue_and_leave_no_job(project: dict[str, Any]) -> None:
    seen = project["seen"]["validation"]
    refused = seen["invalid_task_class"]
    assert seen["priority_high"] == f"{refused}: priority must be a whole number between -100 and 100."
    assert seen["priority_fraction"] == seen["priority_high"]
    assert seen["unknown_queue"] == f"{refused}: Queue 'nowhere' is not valid for backend."
    assert seen["naive_run_after"] == f"{refused}: run_after must be an aware datetime."
    assert seen["unserializable"].startswith("TypeError: Unsupported type")
    assert seen["undecodable_bytes"].startswith("ValueError: Unsupported value")
    assert seen["rows_added"] == 0


def test_get_result_tells_unknown_and_foreign_ids_apart(project: dict[str, Any]) -> None:
    seen = project["seen"]["results"]
    missing = seen["does_not_exist_class"]
    assert seen["not_a_uuid"] == f"{missing}: 'not-a-uuid' is not the id of a Chancy job"
    assert seen["unknown_id"].startswith(f"{missing}: No task result")
    assert seen["native_job"].startswith(f"{missing}: No task result")  # not a job of the framework
    assert seen["other_task"].startswith("TaskResultMismatch")
    assert seen["return_value_of_failed"] == "ValueError: Task failed"


def test_priorities_run_after_and_async_enqueue(project: dict[str, Any]) -> None:
    seen = project["seen"]["priorities"]
    assert seen["priorities"] == [7, -100]  # the framework's range is Chancy's, higher first
    assert seen["deferred_first"] == "READY" and seen["deferred_state"] == "scheduled"
    assert seen["deferred_waited"] is True and seen["deferred_value"] == 2
    assert project["seen"]["asynchronous"]["aenqueue"] == ["SUCCESSFUL", 42]
    # task_enqueued is sent once per enqueue, never for a refused one: per pool 7, then 1
    # (results), 3 (priorities), 1 (aenqueue) and 2 (admin)
    assert project["seen"]["enqueued_signals"] == 4 * 7 + 1 + 3 + 1 + 2


def test_a_job_naming_anything_but_a_registered_task_never_runs(project: dict[str, Any]) -> None:
    seen = project["seen"]["hostile"]
    assert seen["state"] == "failed" and seen["error"] == "chancy.errors.UnknownTaskError"
    assert "not a task of an installed app" in seen["get_result"]


def test_admin_lists_filters_shows_errors_and_checks_permissions(project: dict[str, Any]) -> None:
    seen = project["seen"]["admin"]
    assert seen["list"] == [200, True]
    assert seen["search"] == [200, True, 200, True, 200]  # by task name, by exact id, by anything else
    assert seen["detail"] == [200, True, True]  # the error's message and its traceback
    assert seen["clerk"] == [False, "pending"]  # view-only: no action offered, a forged one refused
    assert seen["cancelled"] == ["cancelled", "FAILED"]  # with chancy.cancel_job
    assert seen["retried"] == 2  # the retried job ran (and failed) again
    assert seen["queue_filter"] == [True] * 4  # the queues the app declares
    assert seen["page_counts"] == [True, True, True]  # estimated unfiltered, exact filtered


def test_manage_py_chancy_is_the_whole_cli_on_djangos_database(project: dict[str, Any]) -> None:
    env = project["env"]
    assert "schema at version" in project["migrate"]
    helped = manage(env, "chancy", "--help").stdout
    for command in ("worker", "migrate", "status", "jobs", "inspect", "purge", "dashboard"):
        assert f"  {command} " in helped
    assert "Usage: manage.py chancy" in manage(env, "help", "chancy").stdout
    status = manage(env, "chancy", "status", "--settings=proj.settings")  # manage.py's own option, applied
    assert "process" in status.stdout and "thread" in status.stdout
    listed = manage(env, "chancy", "jobs", "list", "--state", "failed", "--json", check=False)
    assert listed.returncode == 0, listed.stderr
    for text in (project["log"], status.stdout, status.stderr, project["migrate"]):
        assert PASSWORD not in text
    assert "chancy worker" in project["log"] and "queue    solo" in project["log"]
    # call_command: a command that fails raises CommandError with chancy's exit code
    ok, missing = project["seen"]["call_command"]
    assert ok is None and missing.startswith("CommandError: chancy jobs show") and missing.endswith("exited 6")


def test_the_dsn_comes_from_the_databases_entry(project: dict[str, Any]) -> None:
    seen = project["seen"]["database_settings"]
    assert seen["params"] == {"dbname": "shop", "user": "web", "password": "p w'secret", "host": "db.internal",
                              "port": "6543", "sslmode": "require"}
    assert seen["redacted"] is True
    assert seen["sqlite"] == ("ImproperlyConfigured: DATABASES['lite'] uses django.db.backends.sqlite3: Chancy needs "
                              "a PostgreSQL database (django.db.backends.postgresql)")
    assert seen["typo"] == ("ImproperlyConfigured: DATABASES['typo'] cannot be a Chancy DSN: its OPTIONS hold a key "
                            "that is not a libpq parameter (invalid connection option \"sslmdoe\")")
    assert "secret" not in seen["typo"]


def test_unreachable_database_and_bad_settings_say_what_to_fix(project: dict[str, Any]) -> None:
    env = project["env"]
    down = manage({**env, "PROJ_DATABASE_PORT": "1"}, "chancy", "status", check=False)
    assert down.returncode == 4, down.stderr
    assert "Cannot connect to Postgres" in down.stderr and PASSWORD not in down.stderr + down.stdout
    typo = manage({**env, "PROJ_CHANCY_OVERRIDES": '{"DATABSE": "default"}'}, "chancy", "status", check=False)
    assert typo.returncode != 0 and "settings.CHANCY: unknown key(s) ['DATABSE']" in typo.stderr
    alias = manage({**env, "PROJ_CHANCY_OVERRIDES": '{"DATABASE": "missing"}'}, "chancy", "status", check=False)
    assert alias.returncode != 0 and "CHANCY['DATABASE'] is 'missing', which is not in DATABASES" in alias.stderr


def test_makemigrations_finds_nothing_to_write_in_the_installed_package(project: dict[str, Any]) -> None:
    """The job model's migration ships with the app, whatever the table prefix: Django never
    wants to write one into site-packages."""
    for overrides in ("{}", '{"PREFIX": "jobs_"}'):
        env = {**project["env"], "PROJ_CHANCY_OVERRIDES": overrides}
        done = manage(env, "makemigrations", "--check", "--dry-run", "chancy", check=False)
        assert done.returncode == 0 and "No changes detected" in done.stdout, done.stdout + done.stderr


def test_manage_py_check_reports_the_backend_without_the_app(project: dict[str, Any]) -> None:
    assert manage(project["env"], "check").returncode == 0
    missing = manage({**project["env"], "PROJ_WITHOUT_CHANCY_APP": "1"}, "check", check=False)
    if importlib.util.find_spec("django.tasks") is not None:
        # Django 6 registers the framework's checks when django.tasks is first imported:
        # here nothing imports it before the checks run (docs/django.md says so).
        assert missing.returncode == 0, missing.stderr
        return
    # The backport's app registers them at startup.
    assert missing.returncode != 0 and "(chancy.E001) TASKS['default'] uses Chancy's backend" in missing.stderr


def test_chancy_app_may_be_the_compat_app_on_the_same_database_only(project: dict[str, Any]) -> None:
    """CHANCY['APP'] naming the chancy.compat Celery app: the backend pushes through it when
    its broker is Django's database, and refuses, saying what to change, when it is not."""
    env = {**project["env"], "PROJ_CHANCY_OVERRIDES": '{"APP": "proj.celery:app"}'}
    enqueue = "from orders.tasks import add; print(add.using(queue_name='idle').enqueue(1, 2).status)"
    assert manage(env, "shell", "-c", enqueue).stdout.strip().endswith("READY")
    elsewhere = project["env"]["PROJ_DATABASE_DSN"].replace("chancy_django_", "elsewhere_")
    refused = manage({**env, "PROJ_BROKER_DSN": elsewhere}, "shell", "-c", enqueue, check=False)
    assert refused.returncode != 0
    assert "CHANCY['APP'] 'proj.celery:app' stores its jobs in another database than DATABASES['default']" \
        in refused.stderr


def test_without_chancy_app_the_project_gets_a_djangochancy(project: dict[str, Any], tmp_path: Path) -> None:
    """No CHANCY['APP']: manage.py chancy and the backend use a DjangoChancy made from
    settings.CHANCY; its worker runs the framework's tasks, in process-pool children too."""
    env = {**project["env"], "PROJ_DEFAULT_APP": "1"}
    wait = ("import time; from orders.tasks import add_async, whoami\n"
            "results = [add_async.using(queue_name='process').enqueue(1, 2), whoami.using(queue_name='solo').enqueue('d')]\n"
            "deadline = time.monotonic() + 60\n"
            "while not all(r.is_finished for r in results) and time.monotonic() < deadline:\n"
            "    time.sleep(0.05); [r.refresh() for r in results]\n"
            "print([str(r.status) for r in results], results[0].return_value['sum'], results[1].return_value['label'])")
    log = tmp_path / "worker.log"
    with worker(env, log) as process:
        done = manage(env, "shell", "-c", wait)
        assert process.poll() is None, log.read_text()
    assert done.stdout.strip().endswith("['SUCCESSFUL', 'SUCCESSFUL'] 3 d"), log.read_text()
