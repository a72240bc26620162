"""``DjangoChancy``: a :class:`~chancy.Chancy` app on a Django ``DATABASES`` alias whose
sync pushes made inside ``transaction.atomic()`` on that alias join its transaction."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import psycopg

from chancy.app import Chancy
from chancy.store.pg.dsn import resolve_dsn
from chancy.errors import ConfigurationError
from chancy.executors import process
from chancy.job import Job, Reference
from chancy.queues.pg import Queue

from chancy.contrib.django.database import atomic_connection, database_dsn


class DjangoChancy(Chancy):
    """A Chancy app whose database is ``DATABASES[database]`` (default: ``CHANCY['DATABASE']``,
    else ``"default"``), and whose prefix and queues default to ``settings.CHANCY``'s.

    Made in a process where Django is not set up yet (``chancy worker -A proj.jobs`` with
    ``DJANGO_SETTINGS_MODULE`` set), it sets Django up first. The DSN is read when first
    needed; ``--dsn`` (or ``CHANCY_DSN``) given to a command still overrides it."""

    def __init__(self, database: str | None = None, plugins: Sequence[Any] = (), **options: Any) -> None:
        from chancy.contrib.django.conf import chancy_settings

        _setup_django()
        configured = chancy_settings()
        self.database = database or configured.database
        options.setdefault("prefix", configured.prefix)
        options.setdefault("allowed_imports", configured.allowed_imports)
        queues = [Queue(name, **settings) for name, settings in configured.queues.items()]
        super().__init__(None, [*queues, *plugins], **options)
        self.store.dsn = None  # Django's database, not CHANCY_DSN

    def _default_dsn(self) -> str:  # type: ignore[override]
        return resolve_dsn(database_dsn(self.database))

    def push_many_sync(self, jobs: Sequence[Job], connection: Any = None) -> list[Reference]:
        """As :meth:`Chancy.push_many_sync`; inside ``transaction.atomic()`` on the app's
        database (and no ``connection`` given) the rows are written in that transaction."""
        return super().push_many_sync(jobs, connection if connection is not None else atomic_connection(self.database))


@functools.cache
def default_app() -> Chancy:
    """The project's app: ``CHANCY['APP']`` if set (a DjangoChancy, or a Celery-style
    app of ``chancy.compat`` so that one worker also runs its tasks), else a DjangoChancy
    from ``settings.CHANCY``. The django.tasks backend pushes through it."""
    from chancy.contrib.django.conf import chancy_settings

    configured = chancy_settings()
    if configured.app is None:
        return DjangoChancy()
    from chancy.cli.loading import core_app, find_app

    app = core_app(find_app(configured.app))
    assert app is not None  # find_app refuses anything else
    if not isinstance(app, DjangoChancy) and not same_database(app.dsn, database_dsn(configured.database)):
        raise ConfigurationError(
            f"CHANCY['APP'] {configured.app!r} stores its jobs in another database than "
            f"DATABASES[{configured.database!r}]: pushes could not join Django's transactions. Point it at "
            f"that database (a DjangoChancy does), or set CHANCY['DATABASE'] to the alias it uses")
    return app


def same_database(dsn: str, other: str) -> bool:
    """Whether two DSNs name the same database on the same server (user and password aside)."""
    def where(text: str) -> tuple[str, str, str]:
        params = psycopg.conninfo.conninfo_to_dict(text)
        return (str(params.get("host") or ""), str(params.get("port") or "5432"), str(params.get("dbname") or ""))

    return where(dsn) == where(other)


def _setup_django() -> None:
    """Set Django up unless it is (or is being) set up. In a process-pool child, this runs
    once the worker's app is imported: the apps' ``ready()`` imports their task modules,
    before the child imports the tasks' own modules."""
    import django
    from django.apps import apps

    if not (apps.ready or apps.loading):
        django.setup()


if _setup_django not in process.app_loaded_hooks:
    process.app_loaded_hooks.append(_setup_django)
