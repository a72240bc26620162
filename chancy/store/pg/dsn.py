"""Connection strings: which server an app uses, checked before anything connects (a
malformed DSN fails at once, never echoing its password)."""

from __future__ import annotations

import os

import psycopg

from chancy.errors import ConfigurationError
from chancy.redaction import redact


def resolve_dsn(dsn: str | None) -> str:
    """The DSN to use: the given one, else ``CHANCY_DSN``, else the embedded server."""
    dsn = dsn or os.environ.get("CHANCY_DSN")
    if not dsn:
        from chancy import embedded

        return embedded.default_dsn()
    if dsn.startswith("chancy+"):
        dsn = dsn[len("chancy+"):]
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn[len("postgres://"):]
    scheme = dsn.split("://", 1)[0] if "://" in dsn else None
    try:
        if scheme not in (None, "postgresql"):
            raise ValueError(f"unsupported scheme {scheme + '://'!r}")
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        ports = str(params.get("port", "5432")).split(",")
        if not all(port.strip().isdigit() for port in ports):
            raise ValueError(f"port {params.get('port')!r} is not a number")
    except (psycopg.ProgrammingError, ValueError) as exc:
        raise ConfigurationError(
            f"The DSN {redact(dsn)!r} is not a valid Postgres connection string ({redact(str(exc).strip(), dsn)}). "
            "Use e.g. 'postgresql://user:password@host:5432/dbname'."
        ) from None
    return dsn


def resolve_session_dsn(session_dsn: str | None) -> str | None:
    """The DSN for session-bound work when ``dsn`` goes through a transaction pooler: the
    given one, else ``CHANCY_SESSION_DSN``, else None (``dsn`` holds sessions itself)."""
    session_dsn = session_dsn or os.environ.get("CHANCY_SESSION_DSN")
    if not session_dsn:
        return None
    try:
        return resolve_dsn(session_dsn)
    except ConfigurationError as exc:
        raise ConfigurationError(f"session_dsn (or CHANCY_SESSION_DSN): {exc}") from None
