"""How statements are written and run, for every part of the Postgres store.

An operation is written once as a generator of :class:`Statement` objects (:data:`Steps`)
and driven by :func:`drive_sync` or :func:`drive_async`, so sync and async callers run the
very same statements. The SQL itself lives in the ``.sql`` files of ``chancy/store/pg/sql/``
(read by :class:`SqlFile`); nothing here knows a table."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Mapping

from psycopg import pq, sql

from chancy.store.pg.cursors import statement_cursor

SQL_DIR = Path(__file__).with_name("sql")


def ready(query: sql.Composable) -> bytes:
    """A statement composed once, ready to send as is. psycopg composes a
    :class:`~psycopg.sql.Composable` anew at every execute (escaping each identifier again)
    and caches its parse of a statement only up to 4 KB; the indentation and the comment
    lines (a ``.sql`` file's documentation) are dropped so a long statement (the write-back
    and claim) stays under that."""
    lines = (line.strip() for line in query.as_bytes(None).splitlines())
    return b"\n".join(line for line in lines if line and not line.startswith(b"--"))


@dataclasses.dataclass(frozen=True)
class Statement:
    """One SQL statement with its parameters and what to make of the rows it returns."""

    query: sql.Composable | bytes  # bytes: composed once, ready to send
    params: dict[str, Any]
    mapper: Callable[[list[tuple]], Any] = lambda rows: rows
    copy_data: Iterable[str] | None = None  # text-format data of a ``COPY … FROM STDIN``, in chunks


@dataclasses.dataclass(frozen=True)
class Atomic:
    """Statements sent in one pipeline, so in one transaction and one round trip: up to a
    pipeline's sync, Postgres runs them in one implicit transaction on an autocommit
    connection (every store connection is), committed at the sync, rolled back whole if
    one fails; inside a caller's transaction they are part of it. (``conn.transaction()``
    would sync at its start and its end: three round trips.) Each statement still takes
    its own snapshot (READ COMMITTED). A step yielding it is sent the list of their mapped
    rows."""

    statements: tuple[Statement, ...]


#: An operation: a generator that yields statements, is sent each one's mapped rows,
#: and returns its result. Written once, driven by either driver below.
Steps = Generator[Statement | Atomic, Any, Any]


def _has_rows(cur: Any) -> bool:
    """Whether the statement returned a result set (cheaper than ``cur.description``,
    which builds a column object per field on every call)."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def drive_sync(conn: Any, steps: Steps) -> Any:
    try:
        statement = next(steps)
        while True:
            if isinstance(statement, Atomic):
                with conn.pipeline():
                    cursors = [conn.cursor().execute(s.query, s.params) for s in statement.statements]
                statement = steps.send([s.mapper(cur.fetchall() if _has_rows(cur) else [])
                                        for s, cur in zip(statement.statements, cursors, strict=True)])
                continue
            if statement.copy_data is not None:
                with conn.cursor() as cur, cur.copy(statement.query) as copy:
                    for chunk in statement.copy_data:
                        copy.write(chunk)
                statement = steps.send(None)
                continue
            cur = statement_cursor(conn).execute(statement.query, statement.params)
            statement = steps.send(statement.mapper(cur.fetchall() if _has_rows(cur) else []))
    except StopIteration as stop:
        return stop.value


async def drive_async(conn: Any, steps: Steps) -> Any:
    try:
        statement = next(steps)
        while True:
            if isinstance(statement, Atomic):
                async with conn.pipeline():
                    cursors = [await conn.cursor().execute(s.query, s.params) for s in statement.statements]
                statement = steps.send([s.mapper(await cur.fetchall() if _has_rows(cur) else [])
                                        for s, cur in zip(statement.statements, cursors, strict=True)])
                continue
            if statement.copy_data is not None:
                async with conn.cursor() as cur, cur.copy(statement.query) as copy:
                    for chunk in statement.copy_data:
                        await copy.write(chunk)
                statement = steps.send(None)
                continue
            cur = await statement_cursor(conn).execute(statement.query, statement.params)
            statement = steps.send(statement.mapper(await cur.fetchall() if _has_rows(cur) else []))
    except StopIteration as stop:
        return stop.value


def single(statement: Statement) -> Steps:
    return (yield statement)


_NAME_LINE = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@functools.cache
def _templates(file_name: str) -> dict[str, str]:
    """The statements of one ``.sql`` file by name: each starts at a ``-- name: <name>``
    line and runs to the next one (its comment lines are kept: Postgres ignores them)."""
    text = (SQL_DIR / file_name).read_text()
    parts = _NAME_LINE.split(text)
    templates: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in templates:
            raise ValueError(f"{file_name}: statement {name!r} is defined twice")
        templates[name] = body.strip()
    return templates


class SqlFile:
    """The named statements of one file of ``chancy/store/pg/sql/``, for one table prefix.

    A statement names the app's tables, indexes and channels as ``{jobs}``, ``{queues}``…
    (the keys of :meth:`chancy.migrations.Names.fields`, plus any ``extra`` given here),
    filled in as quoted identifiers; literal braces are doubled (``'{{}}'``). Values are
    psycopg parameters (``%(name)s``, ``%(name)b`` for binary). :meth:`__getitem__` gives
    the statement composed once and ready to send; :meth:`template` the raw text, for the
    few statements assembled from parts at run time (e.g. the INSERT of the columns a
    push sets)."""

    def __init__(self, file_name: str, fields: Mapping[str, sql.Composable]) -> None:
        self.file_name = file_name
        self._fields = dict(fields)
        self._ready: dict[str, bytes] = {}

    def template(self, name: str) -> str:
        try:
            return _templates(self.file_name)[name]
        except KeyError:
            raise KeyError(f"no statement {name!r} in {self.file_name}") from None

    def composed(self, name: str, **extra: sql.Composable) -> sql.Composed:
        return sql.SQL(self.template(name)).format(**self._fields, **extra)

    def __getitem__(self, name: str) -> bytes:
        statement = self._ready.get(name)
        if statement is None:
            statement = self._ready[name] = ready(self.composed(name))
        return statement

    def names(self) -> list[str]:
        return list(_templates(self.file_name))
