"""Celery's Django fixup, for ``chancy.compat``: a Django project's Celery app runs under
``chancy worker -A proj`` as it does under ``celery worker``.

- Django is set up (``django.setup()``) before the app imports its task modules, which
  import models: when the app is finalized (in the worker, and in any process that sends
  tasks before Django is set up) and in each process-pool child, before it imports the
  modules of the worker's tasks.
- Around each task a worker runs, the database connections the task's thread holds are
  checked as Django checks them around a request (``close_old_connections``): one left
  unusable (a dropped session, a broken transaction) or older than ``CONN_MAX_AGE`` is
  closed, so the next task reconnects instead of failing. Caches are closed after it.

It applies when ``DJANGO_SETTINGS_MODULE`` is set or Django's settings are configured
(e.g. by ``settings.configure()`` before ``config_from_object('django.conf:settings')``).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import chancy.compat.signals as signals
from chancy.executors.process import app_loaded_hooks

SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"


def uses_django() -> bool:
    """Whether this process runs a Django project: ``DJANGO_SETTINGS_MODULE`` is set, or
    Django is loaded with its settings configured."""
    if os.environ.get(SETTINGS_ENV):
        return True
    conf = sys.modules.get("django.conf")
    return conf is not None and conf.settings.configured


def setup_django() -> bool:
    """Set Django up for this process's tasks, once; whether Django is in use. Nothing is
    done while Django populates its apps (a module imported then must not start another
    population: Django refuses it) or when it is set up already."""
    if not uses_django():
        return False
    try:
        import django
        from django.apps import apps
    except ImportError:
        warnings.warn(f"{SETTINGS_ENV} is set but Django is not installed: Django is not set up "
                      f"for the tasks (install Django, or unset {SETTINGS_ENV})", UserWarning, stacklevel=2)
        return False
    if not (apps.ready or apps.loading):
        django.setup()
    signals.task_prerun.connect(close_stale_connections)  # connect() adds a receiver once
    signals.task_postrun.connect(close_stale_connections)
    signals.task_postrun.connect(close_caches)
    return True


def installed_packages() -> list[str]:
    """The packages of Django's INSTALLED_APPS (their app configs' ``name``, as Celery's
    fixup reads them, so an entry naming an AppConfig class counts too); none without Django."""
    if not uses_django():
        return []
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return []
    if apps.ready:
        return [config.name for config in apps.get_app_configs()]
    return [name.split(".apps.")[0] for name in settings.INSTALLED_APPS]  # Django is not set up yet


def _run_by_a_worker(sender: Any) -> bool:
    """Whether the signal is about a task a worker runs (``apply()`` runs it inside the
    caller's own work: its connections are the caller's to manage)."""
    request = getattr(sender, "request", None)
    return not getattr(request, "is_eager", False)


def close_stale_connections(sender: Any = None, **_: Any) -> None:
    """Before and after each task: close this thread's database connections that are
    unusable or past ``CONN_MAX_AGE``, as Django does around each request."""
    if _run_by_a_worker(sender):
        from django.db import close_old_connections

        close_old_connections()


def close_caches(sender: Any = None, **_: Any) -> None:
    """After each task: close cache connections, as Django does after each request."""
    if _run_by_a_worker(sender):
        from django.core.cache import close_caches as close_all

        close_all()


def _setup_in_child() -> None:
    """A process-pool child has imported the worker's app: set Django up before it
    imports the task modules."""
    setup_django()


app_loaded_hooks.append(_setup_in_child)
