"""Periodic tasks (beat_schedule, add_periodic_task, crontab) run by the cluster's cron,
and configuration as Celery reads it (conf.update, old names, config_from_object with a
Django-style namespace, routes, annotations, warnings)."""

from __future__ import annotations

import re
import time
import types
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from chancy.compat import Celery, states
from chancy.compat.config import IGNORED_BECAUSE, SUPPORTED, UNSUPPORTED_BECAUSE
from chancy.compat.schedules import crontab, schedule
from chancy.compat.setting_names import CELERY_KEYS
from chancy.errors import ConfigurationError
from chancy.plugins.cron import Cron
from tests.compat.proj import tasks


def _rows(celery_app, func):
    with celery_app.chancy.store.connection_sync() as conn:
        return conn.execute("SELECT state, unique_key FROM chancy_jobs WHERE func = %s", (func,)).fetchall()


def test_crontab_and_schedule_translate_to_cron_timing():
    assert crontab().timing() == {"cron": "* * * * *"}
    assert crontab(minute=0, hour="*/3", day_of_week="mon-fri").timing() == {"cron": "0 */3 * * mon-fri"}
    assert crontab(minute=[0, 30], hour=7, day_of_month=1, month_of_year="1-6").timing() == {"cron": "0,30 7 1 1-6 *"}
    assert schedule(timedelta(seconds=90)).timing() == {"every": 90.0}
    with pytest.raises(ConfigurationError):
        crontab(minute="61")


def test_beat_schedule_fires_through_the_leaders_cron(celery_app):
    celery_app.conf.beat_schedule = {
        "add-every-second": {"task": "tests.compat.proj.tasks.add", "schedule": 1.0, "args": (16, 16)},
        "nightly": {"task": "tests.compat.proj.tasks.mul", "schedule": crontab(minute=0, hour=3), "args": (2, 2)},
    }
    celery_app.add_periodic_task(1.0, tasks.whoami.s(), name="periodic whoami")
    from tests.compat.conftest import BackgroundWorker

    background = BackgroundWorker(celery_app).start()
    try:
        deadline = time.monotonic() + 20
        while sum(1 for state, _ in _rows(celery_app, tasks.add.name) if state == "succeeded") < 2:
            assert time.monotonic() < deadline, "the periodic task did not fire twice"
            time.sleep(0.1)
        names = {s.name for s in Cron.schedules_sync(celery_app.chancy)}
        assert names == {"celery:add-every-second", "celery:nightly", "celery:periodic whoami"}
        assert all(key.startswith("cron:celery:add-every-second:") for _, key in _rows(celery_app, tasks.add.name))
    finally:
        background.stop()


def test_conf_update_attribute_access_and_old_names():
    app = Celery("confapp", set_as_current=False)
    app.conf.update(task_default_queue="q1", CELERY_ALWAYS_EAGER=True)
    assert app.conf.task_default_queue == "q1"
    assert app.conf.task_always_eager is True
    app.conf.CELERY_DEFAULT_QUEUE = "q2"
    assert app.conf["task_default_queue"] == "q2"


def test_config_from_object_with_a_django_style_namespace():
    settings = types.SimpleNamespace(
        CELERY_BROKER_URL="postgresql://user@localhost/proj", CELERY_TASK_ALWAYS_EAGER=True,
        CELERY_TASK_DEFAULT_QUEUE="django", DEBUG=True, INSTALLED_APPS=["app"])
    app = Celery("djangoapp", set_as_current=False)
    app.config_from_object(settings, namespace="CELERY")
    assert app.conf.broker_url == "postgresql://user@localhost/proj"
    assert app.conf.task_always_eager is True
    assert app.conf.task_default_queue == "django"
    assert "debug" not in app.conf


def test_config_from_a_module_path():
    app = Celery("modapp", set_as_current=False)
    app.config_from_object("tests.compat.celeryconfig")
    assert app.conf.task_default_queue == "from-module"
    assert app.conf.task_routes == {"tests.compat.proj.tasks.mul": {"queue": "math"}}


def test_unknown_and_unsupported_keys_warn_once():
    app = Celery("warnapp", set_as_current=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.conf.update(task_defualt_queue="typo", worker_direct=True)
        app.conf.update(task_defualt_queue="typo")
    messages = [str(w.message) for w in caught]
    assert sum("task_defualt_queue" in m for m in messages) == 1
    assert any("worker_direct" in m and "not supported" in m for m in messages)


def test_a_non_postgres_broker_is_refused_clearly():
    app = Celery("redisapp", broker="redis://localhost:6379/0", set_as_current=False)
    with pytest.raises(ConfigurationError, match="not a Postgres DSN"):
        app.chancy  # noqa: B018


def test_task_routes_dict_glob_regex_and_functions(celery_app):
    import re

    def router(name, args, kwargs, options, task=None, **kw):
        return "from-function" if name.endswith(".named") else None

    celery_app.conf.task_routes = [
        {"tests.compat.proj.tasks.add": {"queue": "exact", "priority": 3},
         "tests.compat.proj.tasks.x*": "glob",
         re.compile(r".*\.mu.$"): {"queue": "regex"}},
        router,
    ]

    def queue_of(result):
        record = celery_app.chancy.get_job_sync(result.id)
        return record.queue, record.priority

    assert queue_of(tasks.add.delay(1, 1)) == ("exact", 3)
    assert queue_of(tasks.xsum.delay([1])) == ("glob", 0)
    assert queue_of(tasks.mul.delay(1, 1)) == ("regex", 0)
    assert queue_of(tasks.named.delay()) == ("from-function", 0)
    assert queue_of(tasks.add.apply_async((1, 1), queue="explicit")) == ("explicit", 3)


def test_task_annotations(celery_app):
    app = Celery("annotated", set_as_current=False)
    app.conf.task_annotations = {"annotated.limited": {"max_retries": 9}, "*": {"acks_late": True}}

    @app.task(name="annotated.limited")
    def limited():
        return 1

    app.finalize()
    assert limited.max_retries == 9 and limited.acks_late is True


def test_on_after_configure_can_add_periodic_tasks():
    app = Celery("hooked", set_as_current=False)

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender, **kwargs):
        sender.add_periodic_task(10.0, tasks.add.s(1, 2), name="add every 10")

    app.finalize()
    assert app.conf.beat_schedule["add every 10"]["schedule"] == 10.0


def test_states_of_the_docs():
    assert states.READY_STATES == {"SUCCESS", "FAILURE", "REVOKED"}
    assert "STARTED" in states.UNREADY_STATES


def test_config_from_a_module_attribute_with_a_namespace():
    app = Celery("nsapp", set_as_current=False)
    app.config_from_object("tests.compat.celeryconfig:DjangoSettings", namespace="CELERY")
    assert app.conf.broker_url == "postgres://app@db/app"
    assert app.conf.task_default_queue == "django-queue"
    assert app.conf.beat_schedule["tick"]["schedule"] == 60.0


def test_autodiscover_tasks_imports_each_packages_tasks_module():
    import sys

    sys.modules.pop("tests.compat.discover_me.tasks", None)
    app = Celery("discovering", set_as_current=False)
    app.autodiscover_tasks(["tests.compat.discover_me", "tests.compat"])  # the latter has no tasks module
    assert "tests.compat.discover_me.tasks" not in sys.modules  # lazily, at finalize
    app.finalize()
    assert "tests.compat.discover_me.tasks" in sys.modules


def test_get_task_logger_is_a_child_of_celery_task():
    from chancy.compat.utils.log import get_task_logger

    logger = get_task_logger("tests.compat.some_tasks")
    assert logger.parent.name == "celery.task"


def test_migration_guide_lists_every_setting_with_the_status_the_code_gives_it():
    """The guide's "Every configuration key" table is written by hand: it must name each
    Celery setting once, with the status check_key acts on."""
    def status(key: str) -> str:
        if key in UNSUPPORTED_BECAUSE:
            return "unsupported (warns)"
        if key in SUPPORTED:
            return "supported"
        return "ignored" if any(key.startswith(p) for p in IGNORED_BECAUSE) else "unsupported (warns)"

    guide = (Path(__file__).parents[2] / "migration_guide.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_0-9]+)` \([A-Z_0-9]*\) \| ([^|]+?) \|", guide, re.MULTILINE))
    assert sorted(rows) == sorted(CELERY_KEYS)
    assert {key: shown for key, shown in rows.items() if shown != status(key)} == {}
