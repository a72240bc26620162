"""Enqueueing inside the caller's transaction: a psycopg connection passed explicitly, or
Django's connection when the call happens inside ``transaction.atomic()``. The jobs then
exist if and only if that transaction commits (Celery's enqueue races the commit)."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import psycopg

from chancy.app import Chancy
from chancy.errors import ConfigurationError
from chancy.job import Job


def _same_database(conn: psycopg.Connection, chancy: Chancy) -> bool:
    ours = psycopg.conninfo.conninfo_to_dict(chancy.dsn)
    info = conn.info
    return (ours.get("dbname") or ours.get("user")) == info.dbname \
        and str(ours.get("port") or 5432) == str(info.port) \
        and (ours.get("host") or info.host) == info.host


def django_connection() -> tuple[Any, Any] | None:
    """``(django connection, transaction module)`` if Django is loaded and configured.
    Unconfigured settings are ruled out first: kombu imports Django wherever it is
    installed, and asking its connection raised on every ``.delay()``, which cost ~10% of one."""
    if "django" not in sys.modules:
        return None
    from django.conf import settings

    if not settings.configured:  # an atomic block would have configured them
        return None
    try:
        from django.db import connection, transaction

        connection.in_atomic_block  # noqa: B018 - raises when Django is not configured
    except Exception:  # noqa: BLE001 - Django present but unused
        return None
    return connection, transaction


def push(chancy: Chancy, jobs: Sequence[Job], *, connection: Any = None, on_commit: bool = False) -> None:
    """Insert ``jobs`` in the caller's transaction when there is one. ``on_commit`` asks
    for after-commit semantics: inside Django's atomic block that is what joining the
    transaction gives (the rows appear with the commit); outside one it pushes now."""
    if connection is not None:
        if isinstance(connection, psycopg.AsyncConnection):
            raise ConfigurationError("apply_async(connection=…) takes a sync psycopg.Connection; in async code "
                                     "use chancy.Chancy.push_many(jobs, connection=…)")
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(f"connection= must be a psycopg.Connection, got {type(connection).__name__}")
        chancy.push_many_sync(jobs, connection=connection)
        return
    django = django_connection()
    if django is not None:
        _, transaction = django
        # Any alias (DATABASES entry) of this thread with an atomic block open, not only
        # the default one: the block on the broker's database is the one to join.
        from django.db import connections

        blocks = [conn for conn in connections.all(initialized_only=True) if conn.in_atomic_block]
        for block in blocks:
            raw = getattr(block, "connection", None)
            if isinstance(raw, psycopg.Connection) and _same_database(raw, chancy):
                chancy.push_many_sync(jobs, connection=raw)
                return
        if blocks:
            # Another database or driver: the next best thing is to push after the commit.
            transaction.on_commit(lambda: chancy.push_many_sync(jobs), using=blocks[0].alias)
            return
    chancy.push_many_sync(jobs)
