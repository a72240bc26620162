"""Numbered schema migrations: ``sql/migrations/NNNN_<what>.sql``, one file per version
(its ``-- description:`` line is what the migrations table records), applied in order on
a dedicated session under an advisory lock, each in a transaction of its own with its
record, so a failed one leaves the schema at the version before it."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from psycopg import sql

from chancy.migrations import Names
from chancy.store.pg.session import Session
from chancy.store.pg.statements import SQL_DIR, SqlFile, Statement, Steps, single

if TYPE_CHECKING:
    from chancy.store.pg.store import PgStore

MIGRATIONS_DIR = "migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_DESCRIPTION = re.compile(r"^-- description: (.+)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    file_name: str  # under sql/

    def compose(self, names: Names) -> list[sql.Composed]:
        """Its statements for ``names``' tables, in order, each with the comment lines
        that document it and without its closing semicolon (e.g. to print a script)."""
        statements = SqlFile(self.file_name, names.fields())
        return [sql.SQL(statements.template(name).rstrip(";")).format(**names.fields())
                for name in statements.names()]


def _load() -> tuple[Migration, ...]:
    migrations = []
    for path in sorted((SQL_DIR / MIGRATIONS_DIR).iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            continue
        description = _DESCRIPTION.search(path.read_text())
        if description is None:
            raise ValueError(f"{path.name}: no '-- description:' line")
        migrations.append(Migration(int(match[1]), description[1].strip(), f"{MIGRATIONS_DIR}/{path.name}"))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... without gaps, found {versions}")
    return tuple(migrations)


MIGRATIONS: tuple[Migration, ...] = _load()
LATEST_VERSION = MIGRATIONS[-1].version


def pending(current: int, target: int | None = None) -> list[Migration]:
    """The migrations after version ``current`` up to ``target`` (None: the latest)."""
    target = LATEST_VERSION if target is None else target
    return [m for m in MIGRATIONS if current < m.version <= target]


def schema_version(names: Names) -> Steps:
    """The schema version of ``names``' tables recorded in the database (0 when Chancy was
    never migrated)."""
    versions = SqlFile(f"{MIGRATIONS_DIR}/versions.sql", names.fields())
    table = yield Statement(versions["versions_table_exists"], {"table": names.prefix + "migrations"},
                            lambda rows: rows[0][0])
    if table is None:
        return 0
    return (yield Statement(versions["current_version"], {}, lambda rows: rows[0][0]))


class Schema:
    """An app's schema version: which is applied, and migrating to another. Built from
    the store, as migrating takes a session of its own."""

    def __init__(self, store: "PgStore") -> None:
        self._store = store
        self._names = store.names
        self._versions = SqlFile(f"{MIGRATIONS_DIR}/versions.sql", store.names.fields())
        self._lock_key = {"key": store.names.advisory_key("migrate")}

    def version(self) -> Steps:
        """The schema version recorded in the database (0 when Chancy was never migrated)."""
        return schema_version(self._names)

    def _apply(self, migration: Migration) -> Steps:
        statements = SqlFile(migration.file_name, self._names.fields())
        for name in statements.names():
            yield Statement(statements[name], {})
        yield Statement(self._versions["record"], {"version": migration.version, "description": migration.description})

    async def migrate(self, target: int | None = None) -> list[int]:
        """Apply the pending migrations up to ``target`` (None: the latest); returns the
        versions applied. Serialised across processes by an advisory lock."""
        session = await Session.open(self._store)
        try:
            await session.run(single(Statement(self._versions["lock"], self._lock_key)))
            try:
                await session.run(single(Statement(self._versions["create_versions_table"], {})))
                applied = []
                for migration in pending(await session.run(self.version()), target):
                    await session.run_atomically(self._apply(migration))
                    applied.append(migration.version)
                return applied
            finally:
                await session.run(single(Statement(self._versions["unlock"], self._lock_key)))
        finally:
            await session.close()
