"""Chancy on Django's databases: the DSN of a ``DATABASES`` alias, and the psycopg 3
connection of an open ``transaction.atomic()`` block, so that a push joins it."""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from chancy.redaction import redact

#: ``OPTIONS`` of Django's PostgreSQL backend that are Django's own, not libpq parameters.
_DJANGO_OPTIONS = frozenset({"isolation_level", "server_side_binding", "assume_role", "pool",
                             "cursor_factory", "context", "prepare_threshold"})


def _require_postgres(alias: str) -> dict[str, Any]:
    settings_dict = connections.settings[alias]
    engine = settings_dict.get("ENGINE", "")
    if "postgresql" not in engine and "postgis" not in engine:
        raise ImproperlyConfigured(f"DATABASES[{alias!r}] uses {engine or 'no ENGINE'}: Chancy needs a PostgreSQL "
                                   "database (django.db.backends.postgresql)")
    return settings_dict


def database_dsn(alias: str) -> str:
    """A libpq connection string for ``DATABASES[alias]`` (name, user, password, host,
    port, and the libpq parameters among its OPTIONS, e.g. sslmode)."""
    settings_dict = _require_postgres(alias)
    params: dict[str, Any] = {key: value for key, value in (settings_dict.get("OPTIONS") or {}).items()
                              if key not in _DJANGO_OPTIONS and isinstance(value, (str, int))}
    for key, setting in (("dbname", "NAME"), ("user", "USER"), ("password", "PASSWORD"),
                         ("host", "HOST"), ("port", "PORT")):
        if settings_dict.get(setting):
            params[key] = str(settings_dict[setting])
    try:
        return psycopg.conninfo.make_conninfo(**params)
    except psycopg.ProgrammingError as exc:
        raise ImproperlyConfigured(f"DATABASES[{alias!r}] cannot be a Chancy DSN: its OPTIONS hold a key that is "
                                   f"not a libpq parameter ({redact(str(exc).strip())})") from None


def atomic_connection(alias: str) -> psycopg.Connection | None:
    """The psycopg connection of the ``transaction.atomic()`` block open on ``alias`` in
    this thread, else None (no block open: a push commits at once). A push given it runs
    its INSERT in that transaction: the job exists only if the block commits."""
    connection = connections[alias]
    if not connection.in_atomic_block:
        return None
    _require_postgres(alias)
    connection.ensure_connection()
    raw = connection.connection
    if not isinstance(raw, psycopg.Connection):
        raise ImproperlyConfigured(f"DATABASES[{alias!r}] connects through {type(raw).__module__}: a push can "
                                   "join Django's transaction on psycopg 3 only (pip install 'psycopg[binary]')")
    return raw
