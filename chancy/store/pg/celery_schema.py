"""The Celery transport's check that Chancy's tables exist and are current, so a stock
Celery worker or producer pointed at a database that was never migrated says which
command fixes it, instead of failing on a raw ``UndefinedTable``."""

from __future__ import annotations

from typing import Any

import psycopg

from chancy.errors import SchemaOutOfDateError
from chancy.migrations import Names
from chancy.redaction import redact
from chancy.store.pg.celery_connection import ProcessConnection
from chancy.store.pg.migrations import LATEST_VERSION, schema_version
from chancy.store.pg.statements import Steps, drive_sync


def migrate_command(dsn: str, names: Names) -> str:
    """The command that migrates this database, its password masked."""
    prefix = "" if names.prefix == "chancy_" else f" --prefix {names.prefix}"
    return f"chancy migrate --dsn '{redact(dsn)}'{prefix}"


def schema_out_of_date(dsn: str, names: Names, version: int | None) -> SchemaOutOfDateError:
    found = "has no Chancy tables" if not version else f"has Chancy's schema at version {version}"
    return SchemaOutOfDateError(
        f"The Celery broker's database {redact(dsn)} {found} (table prefix {names.prefix!r}); this Chancy "
        f"needs version {LATEST_VERSION}. Run `{migrate_command(dsn, names)}` (with the real password) once, "
        f"then start the Celery workers again.")


class SchemaCheckedConnection(ProcessConnection):
    """A :class:`ProcessConnection` that checks the schema version each time it opens a
    connection (once per process, again after a reconnect): an old or missing schema
    raises :class:`SchemaOutOfDateError`, and so does a statement that finds a table
    missing later on."""

    def __init__(self, dsn: str, names: Names, *, behind_pooler: bool = False) -> None:
        super().__init__(dsn, behind_pooler=behind_pooler)
        self.names = names
        self._checked: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        conn = super().connection()
        if conn is not self._checked:
            version = drive_sync(conn, schema_version(self.names))
            if version < LATEST_VERSION:
                self.close()
                raise schema_out_of_date(self.dsn, self.names, version)
            self._checked = conn
        return conn

    def run(self, steps: Steps, transaction: bool = False) -> Any:
        try:
            return super().run(steps, transaction=transaction)
        except psycopg.errors.UndefinedTable:
            raise schema_out_of_date(self.dsn, self.names, None) from None
