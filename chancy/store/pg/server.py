"""The server as a whole, through a DSN of its own: whether it answers, its databases
(made and dropped by tests, benchmarks and the embedded server) and what the CLI reports
about it. Each call dials a short-lived connection: none of this belongs to an app."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from chancy.errors import DatabaseUnavailableError
from chancy.redaction import redact
from chancy.store.pg.statements import SqlFile

_SQL = SqlFile("server.sql", {})


def can_connect(dsn: str) -> bool:
    """Whether the server at ``dsn`` accepts a connection now."""
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at ``dbname``, in the same form (URL or ``key=value``) as given."""
    if re.match(r"^postgres(ql)?://", dsn):
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def _run_as_admin(admin_dsn: str, statement: sql.Composed) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(statement)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template`` if given) through a superuser
    DSN and return a DSN for it."""
    if template is None:
        statement = _SQL.composed("create_database", database=sql.Identifier(name))
    else:
        statement = _SQL.composed("create_database_from_template", database=sql.Identifier(name),
                                  template=sql.Identifier(template))
    _run_as_admin(admin_dsn, statement)
    return with_dbname(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, terminating its sessions (Postgres 13+)."""
    _run_as_admin(admin_dsn, _SQL.composed("drop_database", database=sql.Identifier(name)))


def server_info(dsn: str) -> dict[str, str | None]:
    """Server version, data directory (None unless superuser) and DSN (without password)."""
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        # Not chained: libpq quotes pieces of a conninfo it cannot parse, the password too.
        message = redact(str(exc), dsn)
        raise DatabaseUnavailableError(f"Cannot connect to Postgres: {message}") from None
    with conn:
        row = conn.execute(_SQL["server_version"]).fetchone()
        try:
            data_row = conn.execute(_SQL["data_directory"]).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            data_row = None
        return {
            "server_version": row[0] if row else None,
            "data_directory": data_row[0] if data_row else None,
            "dsn": conn.info.dsn,
        }
