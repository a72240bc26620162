"""Telling a database that is away from one that refuses: the first is waited out (the
work is kept and retried), the second is isolated (only the statement's own data is at
fault, so retrying it would block everything queued behind it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from chancy.errors import DatabaseUnavailableError

#: SQLSTATE classes and codes of a server that is restarting, full or cut off: retry.
_TRANSIENT_CLASSES = ("08", "57", "53")
#: ...except these, which no amount of waiting fixes.
_PERMANENT_CODES = frozenset({"57014"})  # query_canceled: a statement timeout


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or went away mid-statement
    (connection refused or reset, server restarting, pool timeout), rather than that it
    refused the statement's data."""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        state = getattr(exc, "sqlstate", None)
        return state is None or (state[:2] in _TRANSIENT_CLASSES and state not in _PERMANENT_CODES)
    return isinstance(exc, (OSError, TimeoutError))


#: What a server says when no amount of waiting will let us in.
_REFUSALS = ("does not exist", "password", "authentication", "pg_hba.conf", "ssl", "permission denied",
             "invalid", "unsupported")


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failure to connect is worth waiting out (the server is down, restarting
    or full), as opposed to a bad password or a database that does not exist. psycopg
    gives connection failures no SQLSTATE, so the server's words decide."""
    if isinstance(exc, DatabaseUnavailableError):
        cause = exc.__cause__ or exc.__context__
        return cause is not None and is_unreachable(cause)
    if isinstance(exc, psycopg.OperationalError):
        state = getattr(exc, "sqlstate", None)
        if state is not None:
            return state[:2] in _TRANSIENT_CLASSES
        text = str(exc).lower()
        return not any(word in text for word in _REFUSALS)
    return isinstance(exc, (OSError, TimeoutError))


def backoff_until(patience: float, first: float = 0.5, cap: float = 5.0) -> Iterator[float]:
    """Delays between tries (doubling up to ``cap``) for as long as ``patience`` seconds
    from now allow the next one."""
    deadline = time.monotonic() + patience
    delay = first
    while time.monotonic() + delay <= deadline:
        yield delay
        delay = min(delay * 2, cap)


def wait_until_reachable(connect: Callable[[], Any], patience: float,
                         on_retry: Callable[[BaseException, float], None]) -> None:
    """Open and close one connection, waiting out a server that is down or restarting
    for up to ``patience`` seconds (a start-up beside a Postgres restart); a refusal
    (bad password, no such database) or the last failure is raised."""
    delays = backoff_until(patience)
    while True:
        try:
            connect().close()
            return
        except Exception as exc:
            delay = next(delays, None)
            if delay is None or not is_unreachable(exc):
                raise
            on_retry(exc, delay)
        time.sleep(delay)
