"""The statements behind the kombu transport's exchanges and transient queues
(``sql/celery_transient.sql``).

Celery's remote control (``inspect``, ``control``), its events and the ``rpc://`` result
backend do not send tasks: they send short-lived messages to queues a client declares for
itself (auto-delete, exclusive or expiring: ``<node>.celery.pidbox``,
``<id>.reply.celery.pidbox``, ``celeryev.<id>``, the rpc backend's ``<id>`` queue). Such a
*transient* queue keeps raw kombu messages in ``kombu_messages``, never job rows: a read
takes (deletes) a message, and an unread one is gone once its time to live has passed,
so replies and events never pile up.

Bindings live in ``kombu_bindings``, so a fanout or a reply published by one process
reaches the queues other processes declared. A transient queue is alive until its
``expires_at``, which its consumer keeps pushing back while it reads; messages for a
queue past that are dropped, as a broker drops messages for a deleted queue, and its row
(with its bindings) is removed a day later (:meth:`TransientSQL.prune`): the day in
between tells a late reply to a queue gone by from a message to an unknown queue.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from chancy.migrations import Names
from chancy.store.pg.statements import SqlFile, Statement

#: A transient queue declared without ``x-expires`` (only auto-delete or exclusive) lives
#: this long after its consumer last read it.
DEFAULT_IDLE_EXPIRY = 3600.0
#: How many expired messages one prune removes.
PRUNE_BATCH = 5000


@dataclasses.dataclass(frozen=True)
class QueueLifetime:
    """How long a transient queue and its messages live, in seconds."""

    expires: float
    message_ttl: float | None


def transient_lifetime(auto_delete: bool, exclusive: bool, arguments: Mapping[str, Any] | None) -> QueueLifetime | None:
    """The lifetime of a queue declared with these options (AMQP's ``x-expires`` and
    ``x-message-ttl`` in ms), or ``None`` for a durable queue: its messages are jobs."""
    arguments = arguments or {}
    expires_ms = arguments.get("x-expires")
    ttl_ms = arguments.get("x-message-ttl")
    if not (auto_delete or exclusive or expires_ms):
        return None
    return QueueLifetime(expires=expires_ms / 1000 if expires_ms else DEFAULT_IDLE_EXPIRY,
                         message_ttl=ttl_ms / 1000 if ttl_ms else None)


def message_ttl(message: Mapping[str, Any]) -> float | None:
    """A message's own time to live in seconds (AMQP ``expiration``, in ms), if it has one."""
    expiration = (message.get("properties") or {}).get("expiration")
    try:
        return max(float(expiration) / 1000, 0.001) if expiration not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _first(rows: list[tuple]) -> Any:
    return rows[0][0] if rows else None


class TransientSQL:
    """The statements on exchanges and transient queues for one table prefix."""

    def __init__(self, names: Names) -> None:
        #: Every stored message notifies this channel with its queue's name.
        self.channel = names.channel("kombu_messages")
        self._statements = SqlFile("celery_transient.sql", names.fields())

    def declare(self, queue: str, lifetime: QueueLifetime) -> Statement:
        return Statement(self._statements["declare"],
                         {"queue": queue, "expires": lifetime.expires, "message_ttl": lifetime.message_ttl})

    def bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> Statement:
        return Statement(self._statements["bind"],
                         {"exchange": exchange, "routing_key": routing_key or "", "pattern": pattern, "queue": queue})

    def unbind(self, exchange: str, routing_key: str, queue: str) -> Statement:
        return Statement(self._statements["unbind"],
                         {"exchange": exchange, "routing_key": routing_key or "", "queue": queue})

    def table(self, exchange: str) -> Statement:
        """The live bindings of an exchange, as kombu's ``(routing_key, pattern, queue)``."""
        return Statement(self._statements["table"], {"exchange": exchange},
                         lambda rows: [tuple(row) for row in rows])

    def fanout(self, exchange: str, payload: str, ttl: float | None) -> Statement:
        """Store a copy for each transient queue bound to ``exchange``; returns the bound
        durable queues."""
        return Statement(self._statements["fanout"],
                         {"exchange": exchange, "payload": payload, "ttl": ttl, "channel": self.channel},
                         lambda rows: list(rows[0][1]))

    def put(self, queue: str, payload: str, ttl: float | None) -> Statement:
        """Store a message in a transient queue; returns whether ``queue`` is one."""
        return Statement(self._statements["put"],
                         {"queue": queue, "payload": payload, "ttl": ttl, "channel": self.channel},
                         lambda rows: bool(rows))

    def take(self, queue: str) -> Statement:
        """The oldest live message of ``queue`` as ``(id, payload)``, removed; or ``None``."""
        return Statement(self._statements["take"], {"queue": queue}, lambda rows: tuple(rows[0]) if rows else None)

    def size(self, queue: str) -> Statement:
        return Statement(self._statements["size"], {"queue": queue}, _first)

    def purge(self, queue: str) -> Statement:
        return Statement(self._statements["purge"], {"queue": queue}, _first)

    def prune(self) -> Statement:
        """Remove expired messages, and queues a day past their expiry; returns both counts.
        Every consumer prunes: rows another one is removing are skipped, not waited for."""
        return Statement(self._statements["prune"], {"batch": PRUNE_BATCH}, lambda rows: tuple(rows[0]))
