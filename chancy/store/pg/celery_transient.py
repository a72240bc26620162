"""The statements behind the kombu transport's exchanges and transient queues.

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

from psycopg import sql

from chancy.migrations import Names
from chancy.store.pg.statements import ready, Statement

#: A transient queue declared without ``x-expires`` (only auto-delete or exclusive) lives
#: this long after its consumer last read it.
DEFAULT_IDLE_EXPIRY = 3600.0
#: How many expired messages one prune removes.
PRUNE_BATCH = 5000

#: A message lives until this: the shorter of its own ``expiration`` (``ttl``) and its
#: queue's ``x-message-ttl`` (else the queue's idle expiry).
_MESSAGE_EXPIRY = ("now() + make_interval(secs => LEAST(COALESCE(q.message_ttl, q.expires), "
                   "COALESCE(%(ttl)s::float8, 'infinity'::float8)))")
_LIVE = "(q.expires_at IS NULL OR q.expires_at > now())"


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
    def __init__(self, names: Names) -> None:
        f = names.fields()
        #: Every stored message notifies this channel with its queue's name.
        self.channel = names.channel("kombu_messages")
        self._declare = ready(sql.SQL(
            """
            INSERT INTO {kombu_queues} (name, transient, message_ttl, expires, expires_at)
            VALUES (%(queue)s, TRUE, %(message_ttl)s, %(expires)s, now() + make_interval(secs => %(expires)s))
            ON CONFLICT (name) DO UPDATE SET transient = TRUE, message_ttl = EXCLUDED.message_ttl,
                expires = EXCLUDED.expires, expires_at = EXCLUDED.expires_at
            """
        ).format(**f))
        # A queue bound without being declared transient here is a durable (job) queue.
        self._bind = ready(sql.SQL(
            """
            WITH queue AS (
                INSERT INTO {kombu_queues} (name, transient) VALUES (%(queue)s, FALSE)
                ON CONFLICT (name) DO NOTHING
            )
            INSERT INTO {kombu_bindings} (exchange, routing_key, queue, pattern)
            VALUES (%(exchange)s, %(routing_key)s, %(queue)s, %(pattern)s)
            ON CONFLICT (exchange, routing_key, queue) DO UPDATE SET pattern = EXCLUDED.pattern
            """
        ).format(**f))
        self._unbind = ready(sql.SQL(
            "DELETE FROM {kombu_bindings} WHERE exchange = %(exchange)s AND routing_key = %(routing_key)s "
            "AND queue = %(queue)s"
        ).format(**f))
        self._table = ready(sql.SQL(
            "SELECT b.routing_key, b.pattern, b.queue FROM {kombu_bindings} b "
            "JOIN {kombu_queues} q ON q.name = b.queue WHERE b.exchange = %(exchange)s AND " + _LIVE
        ).format(**f))
        # One copy for every live transient queue bound to the exchange; the durable ones
        # come back, for the caller to store the message as a job in each.
        self._fanout = ready(sql.SQL(
            """
            WITH bound AS (
                SELECT q.name, q.transient, q.message_ttl, q.expires FROM {kombu_queues} q
                WHERE q.name IN (SELECT queue FROM {kombu_bindings} WHERE exchange = %(exchange)s) AND """ + _LIVE + """
            ),
            stored AS (
                INSERT INTO {kombu_messages} (queue, payload, expires_at)
                SELECT q.name, %(payload)s, """ + _MESSAGE_EXPIRY + """ FROM bound q WHERE q.transient
                RETURNING queue
            )
            SELECT (SELECT count(pg_notify(%(channel)s, queue)) FROM (SELECT DISTINCT queue FROM stored) s),
                   ARRAY(SELECT name FROM bound WHERE NOT transient)
            """
        ).format(**f))
        # Whether the queue is a transient one; a message is stored only while it is alive.
        self._put = ready(sql.SQL(
            """
            WITH target AS (
                SELECT q.name, q.message_ttl, q.expires, """ + _LIVE + """ AS alive
                FROM {kombu_queues} q WHERE q.name = %(queue)s AND q.transient
            ),
            stored AS (
                INSERT INTO {kombu_messages} (queue, payload, expires_at)
                SELECT q.name, %(payload)s, """ + _MESSAGE_EXPIRY + """ FROM target q WHERE q.alive
                RETURNING queue
            )
            SELECT TRUE, (SELECT count(pg_notify(%(channel)s, queue)) FROM stored) FROM target
            """
        ).format(**f))
        # Take the oldest live message, and push the queue's expiry back once half of it is
        # spent (a write every expires/2 seconds, not one per read).
        self._take = ready(sql.SQL(
            """
            WITH taken AS (
                DELETE FROM {kombu_messages} WHERE id = ANY(ARRAY(
                    SELECT id FROM {kombu_messages} WHERE queue = %(queue)s AND expires_at > now()
                    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED))
                RETURNING id, payload
            ),
            kept AS (
                UPDATE {kombu_queues} SET expires_at = now() + make_interval(secs => expires)
                WHERE name = %(queue)s AND transient AND expires_at < now() + make_interval(secs => expires / 2)
            )
            SELECT id, payload FROM taken
            """
        ).format(**f))
        self._size = ready(sql.SQL(
            "SELECT count(*) FROM {kombu_messages} WHERE queue = %(queue)s AND expires_at > now()"
        ).format(**f))
        self._purge = ready(sql.SQL(
            "WITH purged AS (DELETE FROM {kombu_messages} WHERE queue = %(queue)s RETURNING 1) "
            "SELECT count(*) FROM purged"
        ).format(**f))
        self._prune = ready(sql.SQL(
            """
            WITH messages AS (
                DELETE FROM {kombu_messages} WHERE id = ANY(ARRAY(
                    SELECT id FROM {kombu_messages} WHERE expires_at <= now() LIMIT %(batch)s
                    FOR UPDATE SKIP LOCKED))
                RETURNING 1
            ),
            queues AS (
                DELETE FROM {kombu_queues} WHERE expires_at < now() - interval '1 day' RETURNING 1
            )
            SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM queues)
            """
        ).format(**f))

    def declare(self, queue: str, lifetime: QueueLifetime) -> Statement:
        return Statement(self._declare, {"queue": queue, "expires": lifetime.expires,
                                         "message_ttl": lifetime.message_ttl})

    def bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> Statement:
        return Statement(self._bind, {"exchange": exchange, "routing_key": routing_key or "",
                                      "pattern": pattern, "queue": queue})

    def unbind(self, exchange: str, routing_key: str, queue: str) -> Statement:
        return Statement(self._unbind, {"exchange": exchange, "routing_key": routing_key or "", "queue": queue})

    def table(self, exchange: str) -> Statement:
        """The live bindings of an exchange, as kombu's ``(routing_key, pattern, queue)``."""
        return Statement(self._table, {"exchange": exchange}, lambda rows: [tuple(row) for row in rows])

    def fanout(self, exchange: str, payload: str, ttl: float | None) -> Statement:
        """Store a copy for each transient queue bound to ``exchange``; returns the bound
        durable queues."""
        return Statement(self._fanout, {"exchange": exchange, "payload": payload, "ttl": ttl,
                                        "channel": self.channel}, lambda rows: list(rows[0][1]))

    def put(self, queue: str, payload: str, ttl: float | None) -> Statement:
        """Store a message in a transient queue; returns whether ``queue`` is one."""
        return Statement(self._put, {"queue": queue, "payload": payload, "ttl": ttl, "channel": self.channel},
                         lambda rows: bool(rows))

    def take(self, queue: str) -> Statement:
        """The oldest live message of ``queue`` as ``(id, payload)``, removed; or ``None``."""
        return Statement(self._take, {"queue": queue}, lambda rows: tuple(rows[0]) if rows else None)

    def size(self, queue: str) -> Statement:
        return Statement(self._size, {"queue": queue}, _first)

    def purge(self, queue: str) -> Statement:
        return Statement(self._purge, {"queue": queue}, _first)

    def prune(self) -> Statement:
        """Remove expired messages, and queues a day past their expiry; returns both counts.
        Every consumer prunes: rows another one is removing are skipped, not waited for."""
        return Statement(self._prune, {"batch": PRUNE_BATCH}, lambda rows: tuple(rows[0]))
