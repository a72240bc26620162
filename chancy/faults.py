"""Telling a database that is away from one that refuses: the first is waited out (the
work is kept and retried), the second is isolated (only the statement's own data is at
fault, so retrying it would block everything queued behind it)."""

from __future__ import annotations

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
