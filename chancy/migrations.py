"""The identifiers of one Chancy schema, derived from its table prefix: tables, indexes,
channels and advisory-lock keys. (The migrations that create them are in
``chancy/store/pg/sql/migrations/``, applied by :mod:`chancy.store.pg.migrations`.)"""

from __future__ import annotations

import hashlib
import re

from psycopg import sql

from chancy.errors import ConfigurationError

PREFIX_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise ConfigurationError(
            f"Table prefix {prefix!r} is invalid: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore (at most 41 characters)."
        )
    return prefix


class Names:
    """Every identifier of one Chancy schema, derived from its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)

    def ident(self, suffix: str) -> sql.Identifier:
        return sql.Identifier(self.prefix + suffix)

    def channel(self, suffix: str) -> str:
        return self.prefix + suffix

    def advisory_key(self, purpose: str) -> int:
        """A stable 63-bit advisory-lock key for this prefix and purpose."""
        digest = hashlib.sha256(f"{self.prefix}:{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)

    def fields(self) -> dict[str, sql.Identifier]:
        return {name: self.ident(name) for name in IDENTIFIERS}


IDENTIFIERS = (
    "jobs",
    "jobs_pending",
    "jobs_scheduled",
    "jobs_running",
    "jobs_unique",
    "jobs_finished",
    "workers",
    "migrations",
    "queues",
    "cron",
    "cron_due",
    "workers_expiry",
    "task_rates",
    "kombu_queues",
    "kombu_bindings",
    "kombu_messages",
    "kombu_messages_queue",
    "kombu_messages_expiry",
    "kombu_queues_expiry",
    "cron_pkey",
    "cron_namespace",
    "celery_groups",
    "celery_groups_expiry",
    "celery_chords",
    "celery_chords_fired",
    "celery_chord_parts",
    "jobs_keyed_running",
    "jobs_keyed_waiting",
    "jobs_pending_by_key",
)

#: The states of a job not yet finished.
LIVE = "('pending', 'scheduled', 'running', 'retrying')"
