"""A kombu virtual transport on Chancy's job table, so an unchanged Celery app can use
Postgres as its broker (``broker_url="chancy+postgresql://user@host/db"`` after
``import chancy.compat.kombu``, or ``broker_transport="chancy.compat.kombu:Transport"``).

Every published task message becomes a job row (see :mod:`chancy.compat.protocol`), so
Chancy workers and stock Celery workers can drain the same queues. A Celery consumer
claims a row exactly as a Chancy worker does — state ``running``, owned by the
consumer's id, which heartbeats into the workers table from a background thread — so a
consumer killed with unacknowledged messages loses nothing: its rows are recovered once
its heartbeat is stale. An ack finishes the row — unless the task's outcome is still to
come through the Chancy result backend: then the row stays running under the consumer
until the backend writes SUCCESS or FAILURE (or the task ends storing nothing: ``Ignore``,
``Reject``; see :meth:`chancy.compat.backend.ChancyBackend.end_unrecorded`), so even with
Celery's default early acks a consumer killed mid-task gets its row recovered. A reject fails the row or, with
``requeue``, puts it back.

A stock Celery worker runs the transport in its event loop (``asynloop``, see
:mod:`chancy.compat.kombu_loop`), as Redis' transport: a notification wakes delivery,
and a prefork worker whose processes are all busy still answers remote control.

Prefetch: a consumer's round claims as many rows as its prefetch limit (Celery's
``worker_prefetch_multiplier`` × concurrency) leaves room for, in one statement, and hands
them out one per round; in the event loop it claims only once half the limit is free, so
one claim serves several tasks. Rows claimed ahead run under the consumer as delivered
ones do (a consumer killed with -9 gets them recovered); a consumer that stops consuming a
queue or closes puts them back, their attempt given back. Acks made on the event loop that
leave the row to the result backend are gathered and sent with the next claim, in one
round trip, or by a timer moments later.

Options (``broker_transport_options``): ``prefix`` (table prefix, default ``chancy_``),
``accept_content`` (serializers decoded on publish, default ``["json"]``),
``lower_priority_first`` (Redis-style priorities), ``polling_interval`` (seconds between
checks for due scheduled rows; pushes wake consumers at once through LISTEN),
``await_results`` (default: whether the current Celery app's ``result_backend`` is a
``chancy+`` URL), ``heartbeat_interval`` (default 5 s) and ``consumer_timeout`` (default 60 s: a consumer
that has not heartbeaten for this long counts as dead, and its rows are recovered like a
Chancy worker's — by any consumer's heartbeat thread or the Chancy cluster's leader),
``session_url`` (default ``CHANCY_SESSION_DSN``: when the broker URL goes through a
transaction pooler such as PgBouncer, a DSN straight to Postgres for the LISTEN
connection; statements then go through the pooler unprepared, see docs/poolers.md).

Trust: a row's arguments kept in a serializer other than JSON are decoded only when the
consuming Celery worker accepts that content type (its ``accept_content``; for a kombu
consumer without one, the transport's ``accept_content``); any row that cannot become a
message for its consumer is failed with the reason, and the consumer takes the next. A
message reusing the task id of an existing row is refused with :class:`TaskIdInUse`
unless it is that task's own retry or its replacement (``Task.replace()``; see
:mod:`chancy.store.pg.celery_transport`). Statements
are sent again after a dropped connection for up to 30 s, so a Postgres restart neither
loses a published message nor a delivery's acknowledgement.

Routing: durable queues map 1:1 to Chancy queues, and their messages are job rows.
Exchanges (direct, topic, fanout) route through bindings kept in the database, so every
process sees them. A *transient* queue (declared auto-delete, exclusive or expiring, as
Celery's remote-control, reply, event and ``rpc://`` result queues are) holds raw kombu
messages that expire instead (:mod:`chancy.store.pg.celery_transient`): ``celery inspect``,
``app.control``, worker events (``-E``, Flower) and ``result_backend="rpc://"`` work as
on Redis. A ``revoke`` broadcast also cancels the rows, so no worker of either kind runs
them. Expired messages are pruned by every consumer's heartbeat thread.

A database that was never migrated (or is behind this code) is refused with
:class:`~chancy.errors.SchemaOutOfDateError` naming the ``chancy migrate`` command.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from queue import Empty
from typing import Any, Callable

import psycopg
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils import json as kombu_json

from chancy.store.pg.dsn import resolve_dsn
from chancy.compat import protocol
from chancy.compat.kombu_loop import HubDelivery
from chancy.errors import ConfigurationError
from chancy.migrations import Names
from chancy.store.pg.cluster import ClusterSQL
from chancy.store.pg.jobs import claim_steps
from chancy.job import JobRecord, JobState
from chancy.store.pg.jobs import JobSQL
from chancy.store.pg.celery_connection import (Listening, ProcessConnection, first_line, run_reconnecting,
                                               statement_and_listen_connections)
from chancy.store.pg.celery_schema import SchemaCheckedConnection
from chancy.store.pg.celery_transient import TransientSQL, message_ttl, transient_lifetime
from chancy.store.pg.celery_transport import Ack, TransportSQL
from chancy.store.pg.statements import Atomic, single, Statement, Steps
from chancy.store.pg.worker import WorkerSQL

log = logging.getLogger("chancy.compat.kombu")

DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_CONSUMER_TIMEOUT = 60.0
RECOVERY_BATCH = 500
#: Rows a consumer with no prefetch limit claims at once.
UNLIMITED_CLAIM = 32
#: The delivery tags of messages of transient queues start with this.
TRANSIENT_TAG = "transient/"
#: ``(table prefix, queue)`` of the transient queues declared in this process: their
#: messages never become job rows (see :mod:`chancy.store.pg.celery_transient`).
_TRANSIENT_QUEUES: set[tuple[str, str]] = set()


class TaskIdInUse(ValueError):
    """A published message names the task id of an existing row and is neither that
    task's own retry nor its replacement: the row is left as it is and the message is not
    stored."""


def _error(kind: str, message: str) -> dict[str, Any]:
    """An entry of a row's ``errors``, for a failure decided by the transport."""
    return {"type": kind, "message": message, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _consumer_accept(callback: Any) -> set[str] | None:
    """The content types the kombu consumer behind a ``basic_consume`` callback accepts
    (a Celery worker's ``accept_content``), or ``None`` when it names none. kombu hands
    the channel only the consumer's bound ``_receive_callback``, hence ``__self__``."""
    accept = getattr(getattr(callback, "__self__", None), "accept", None)
    return set(accept) if accept is not None else None


def revoke_steps(statements: JobSQL, job_id: uuid.UUID, terminate: bool) -> Steps:
    """Cancel a job that has not started; a running one only with ``terminate`` (Chancy
    workers then stop it; a Celery worker running it is not signalled). A row the result
    backend made for a task another broker carries (``meta["celery"]["foreign"]``) counts
    as started elsewhere, so its state stays the one its worker reported, as on Redis."""
    record = yield statements.get(job_id)
    if record is None or record.is_finished:
        return False
    started = record.state is JobState.RUNNING or bool((record.meta.get("celery") or {}).get("foreign"))
    if started and not terminate:
        return False
    return (yield statements.cancel(job_id))


def _dsn_of(client: Any) -> str:
    """The Postgres DSN a kombu connection names: ``chancy+postgresql://…`` leaves the
    whole DSN in ``hostname``; a plain ``postgresql://`` URL is split into parts."""
    hostname = client.hostname or ""
    if "://" in hostname or "=" in hostname:
        return resolve_dsn(hostname)
    if not hostname:
        return resolve_dsn(None)
    params = {"host": hostname, "port": client.port, "user": client.userid,
              "password": client.password, "dbname": (client.virtual_host or "").strip("/") or None}
    return resolve_dsn(psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v}))


class Channel(virtual.Channel):
    """A kombu channel whose queues are Chancy queues."""

    #: Bindings are stored in the database (:meth:`_queue_bind`, :meth:`get_table`).
    supports_fanout = True
    do_restore = True
    connection: "Transport"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accept_by_queue: dict[str, set[str] | None] = {}
        #: The queue of each message of a transient queue delivered and not yet settled.
        self._transient_tags: dict[str, str] = {}
        #: Rows of each job queue claimed ahead (one claim serves several deliveries),
        #: running under the consumer and not yet handed to it, best first.
        self._claimed: dict[str, collections.deque[JobRecord]] = {}
        #: Acks made on Celery's event loop, sent with the next claim or by a timer.
        self._acks: list[Ack] = []

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> Any:
        """Also note what the consumer accepts: a row is turned into a message for it only
        if it would accept the result (see :meth:`_get`)."""
        self._accept_by_queue[queue] = _consumer_accept(callback)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def _accepted_on(self, queue: str) -> set[str]:
        accept = self._accept_by_queue.get(queue)
        return self.connection.accept_content if accept is None else accept

    # --- exchanges and transient queues ---------------------------------------------------
    def prepare_queue_arguments(self, arguments: Any, **kwargs: Any) -> Any:
        """``expires`` and ``message_ttl`` of a kombu Queue as AMQP arguments, which
        :meth:`_new_queue` reads."""
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def _new_queue(self, queue: str, auto_delete: bool = False, exclusive: bool = False,
                   arguments: Any = None, **kwargs: Any) -> None:
        """Record a transient queue in the database; a durable queue needs nothing."""
        lifetime = transient_lifetime(auto_delete, exclusive, arguments)
        if lifetime is None:
            return
        transport = self.connection
        run_reconnecting(transport.database, lambda: single(transport.transient_sql.declare(queue, lifetime)),
                         f"declare queue {queue}")
        _TRANSIENT_QUEUES.add((transport.prefix, queue))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        transport = self.connection
        run_reconnecting(transport.database,
                         lambda: single(transport.transient_sql.bind(exchange, routing_key, pattern, queue)),
                         f"bind queue {queue} to exchange {exchange}")

    def get_table(self, exchange: str) -> list[tuple[str, Any, str]]:
        """The exchange's bindings, as every process declared them."""
        transport = self.connection
        return run_reconnecting(transport.database, lambda: single(transport.transient_sql.table(exchange)),
                                f"read the bindings of exchange {exchange}")

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        """A copy for every queue bound to the exchange. A ``revoke`` (``app.control.revoke``,
        ``AsyncResult.revoke``) also cancels the rows, so no worker of either kind runs them."""
        self._revoke_rows(message)
        transport = self.connection
        payload = kombu_json.dumps(message)
        durable = run_reconnecting(
            transport.database, lambda: single(transport.transient_sql.fanout(exchange, payload, message_ttl(message))),
            f"broadcast on exchange {exchange}")
        for queue in durable:
            self._put(queue, message)

    def _revoke_rows(self, message: dict[str, Any]) -> None:
        try:
            command = protocol.decode_body(message, ["json"])
        except protocol.InvalidMessage:
            return
        if not isinstance(command, dict) or command.get("method") != "revoke":
            return
        arguments = command.get("arguments") or {}
        task_ids = arguments.get("task_id") or []
        terminate = bool(arguments.get("terminate"))
        for task_id in [task_ids] if isinstance(task_ids, str) else task_ids:
            revoke = functools.partial(revoke_steps, self.connection.job_sql, protocol.job_id_for(task_id), terminate)
            run_reconnecting(self.connection.database, revoke, f"revoke {task_id}")

    def _is_transient(self, queue: str) -> bool:
        return (self.connection.prefix, queue) in _TRANSIENT_QUEUES

    def _put_transient(self, queue: str, message: dict[str, Any]) -> bool:
        """Store a message in a transient queue; whether ``queue`` is one (a message for a
        transient queue past its expiry is dropped, as a broker drops messages for a
        deleted queue)."""
        transport = self.connection
        payload = kombu_json.dumps(message)
        return run_reconnecting(
            transport.database, lambda: single(transport.transient_sql.put(queue, payload, message_ttl(message))),
            f"publish to queue {queue}")

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Store the message: in a transient queue as it is; else as a row (again after a
        dropped connection: a message stored twice is recognised), :class:`TaskIdInUse`
        when its id belongs to another row. A message that is not a task (a reply, a
        result, an event) goes to the transient queue of that name, declared by another
        process, and becomes a (failed) row only when no such queue was ever declared."""
        transient = self._is_transient(queue)
        if transient or not (message.get("headers") or {}).get("task"):
            if self._put_transient(queue, message) or transient:
                return
        transport = self.connection
        translation = protocol.job_from_message(
            message, queue, accept=transport.accept_content,
            lower_priority_first=transport.lower_priority_first,
        )
        job = translation.job
        parent_id = (job.meta.get("celery") or {}).get("parent_id")
        parent_job = protocol.job_id_for(parent_id) if parent_id else None
        outcome = run_reconnecting(
            transport.database,
            lambda: transport.transport_sql.store(job, translation.attempts, translation.error, parent_job),
            f"publish task {job.id}")
        if outcome.discarded:
            log.info("task %s of queue %r was revoked while it waited for its replacement; the replacement "
                     "(%s) is dropped", job.id, queue, job.func)
            return
        if outcome.refused:
            task_id = (message.get("headers") or {}).get("id") or job.id
            raise TaskIdInUse(
                f"task id {task_id} belongs to an existing job ({outcome.existing_state or 'being stored'}); "
                f"only that task's own retry or replacement (Task.replace()), published while a Celery worker "
                f"runs it, may reuse the id, "
                f"so this {job.func} message was not stored and the job is unchanged")
        if outcome.repeated:
            log.info("task %s of queue %r was already stored (a publish repeated)", job.id, queue)
        elif translation.error:
            log.error("stored task %s of queue %r as failed: %s", job.id, queue, translation.error)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """The next message of ``queue`` for a direct read (``basic_get``, which no
        prefetch limit bounds): a row claimed ahead, else one row claimed now."""
        if self._is_transient(queue):
            return self._take_transient(queue)
        return self._next_message(queue, 1)

    def _next_message(self, queue: str, claim_size: int) -> dict[str, Any]:
        """The next row of ``queue`` as a message for this channel's consumer (claiming
        up to ``claim_size`` rows when none is claimed ahead); a row that cannot become
        one is failed with the reason and the next one is taken."""
        transport = self.connection
        transport.ensure_registered()
        while True:
            claimed = self._claimed.get(queue)
            if not claimed:
                claimed = self._claimed[queue] = collections.deque(self._claim(queue, claim_size))
            record = claimed.popleft()
            try:
                return protocol.message_from_record(
                    record, accept=self._accepted_on(queue), lower_priority_first=transport.lower_priority_first)
            except protocol.InvalidMessage as exc:
                self._fail_undeliverable(record, str(exc))

    def _take_transient(self, queue: str) -> dict[str, Any]:
        """The oldest message of a transient queue, taken from it (at most once, as with
        Redis' fanout); :class:`Empty` also while Postgres is unreachable."""
        transport = self.connection
        try:
            taken = transport.database.run(single(transport.transient_sql.take(queue)))
        except psycopg.OperationalError as exc:
            log.warning("reading queue %r failed (%s); trying again", queue, first_line(exc))
            raise Empty() from None
        transport.transient_read(queue, found=taken is not None)
        if taken is None:
            raise Empty()
        message_id, payload = taken
        message = kombu_json.loads(payload)
        tag = f"{TRANSIENT_TAG}{message_id}"
        message.setdefault("properties", {})["delivery_tag"] = tag
        self._transient_tags[tag] = queue
        return message

    def _get_and_deliver(self, queue: str, callback: Callable[[Any, str], Any]) -> None:
        """A consumer's read (``basic_get`` reads at once): a transient queue is read only
        when due (see :meth:`Transport.transient_due`); a job queue's rows are claimed
        several at a time, as many as the prefetch limit lets the consumer hold."""
        if self._is_transient(queue):
            if not self.connection.transient_due(queue):
                raise Empty()
            super()._get_and_deliver(queue, callback)
            return
        callback(self._next_message(queue, self._claim_size()), queue)

    def _claimed_ahead(self) -> int:
        return sum(len(claimed) for claimed in self._claimed.values())

    def _claim_size(self) -> int:
        """How many rows a consumer's round may claim: the room its prefetch limit leaves
        beside the rows claimed ahead (:data:`UNLIMITED_CLAIM` without a limit). In
        Celery's event loop a round claims only once half the limit is free, so one claim
        (and its commit) serves several deliveries while the consumer still holds the
        other half; the loop delivers again when acks have freed enough
        (:meth:`wants_delivery`)."""
        free = self.qos.can_consume_max_estimate()
        if free is None:
            return UNLIMITED_CLAIM
        free -= self._claimed_ahead()
        if self.connection.on_event_loop and free < (self.qos.prefetch_count + 1) // 2:
            return 0
        return max(free, 0)

    def wants_delivery(self) -> bool:
        """Whether a round would hand this channel's consumers a message now: one is
        claimed ahead, or the prefetch limit leaves room to claim (:meth:`_claim_size`)."""
        if not self._consumers or not self.qos.can_consume():
            return False
        return self._claimed_ahead() > 0 or self._claim_size() > 0

    def _claim(self, queue: str, limit: int) -> list[JobRecord]:
        """Claim up to ``limit`` rows, sending the acks gathered meanwhile in the same
        transaction (one commit for both); :class:`Empty` when there is none, or no room
        (also while Postgres is unreachable: the consumer then waits and tries again, it
        does not restart its connection; the acks stay gathered)."""
        if limit <= 0:
            raise Empty()
        transport = self.connection
        acks = self._acks
        try:
            if transport.claim_uncertain:
                transport.release_undelivered()
            claim = claim_steps(transport.job_sql, queue, transport.consumer_id, limit)
            records = transport.database.run(self._with_acks(acks, claim) if acks else claim)
        except psycopg.OperationalError as exc:
            transport.claim_uncertain = True  # it may have committed: see release_undelivered
            log.warning("claiming from queue %r failed (%s); trying again", queue, first_line(exc))
            raise Empty() from None
        self._acks = []
        if not records:
            raise Empty()
        return records

    def _with_acks(self, acks: list[Ack], claim: Steps) -> Steps:
        """The claim's steps, its first statement sent with the acks: in one transaction
        and one round trip (:class:`~chancy.store.pg.statements.Atomic`)."""
        transport = self.connection
        ack = transport.transport_sql.ack(transport.consumer_id, acks)
        first = next(claim)
        if isinstance(first, Atomic):
            answer: Any = (yield Atomic((ack, *first.statements)))[1:]
        else:
            answer = (yield Atomic((ack, first)))[1]
        try:
            while True:
                answer = yield claim.send(answer)
        except StopIteration as stop:
            return stop.value

    def held_rows(self) -> list[uuid.UUID]:
        """The rows this channel rightly holds: delivered and not settled, claimed ahead,
        or acknowledged with the ack not sent yet."""
        return ([protocol.parse_delivery_tag(tag)[0] for tag in self.qos._delivered
                 if not tag.startswith(TRANSIENT_TAG)]
                + [record.id for claimed in self._claimed.values() for record in claimed]
                + [ack.job_id for ack in self._acks])

    def _release_claimed(self, queues: list[str]) -> None:
        """Put back the rows of ``queues`` claimed ahead (their attempt given back): the
        consumer stops consuming them. A failure leaves them to the recovery of a stopped
        consumer's rows."""
        ids = [record.id for queue in queues for record in self._claimed.pop(queue, ())]
        if not ids:
            return
        transport = self.connection
        try:
            transport.database.run(single(transport.transport_sql.release(transport.consumer_id, ids)))
        except psycopg.Error as exc:
            log.warning("putting back %d row(s) claimed ahead failed (%s); they are recovered once this "
                        "consumer counts as stopped", len(ids), first_line(exc))

    def _fail_undeliverable(self, record: JobRecord, reason: str) -> None:
        message = f"job {record.id} ({record.func}) cannot be sent to a Celery worker: {reason}"
        log.error("%s; failed it", message)
        error = _error("chancy.compat.InvalidMessage", message)
        fail = self.connection.transport_sql.fail
        self._write_delivery(protocol.delivery_tag(record),
                             lambda job_id, attempt, who: fail(job_id, attempt, who, error))

    def _size(self, queue: str) -> int:
        statements = self.connection.transient_sql if self._is_transient(queue) else self.connection.transport_sql
        return self.connection.database.run(single(statements.size(queue)))

    def _purge(self, queue: str) -> int:
        transport = self.connection
        if self._is_transient(queue):
            return transport.database.run(single(transport.transient_sql.purge(queue)))
        return transport.database.run(transport.transport_sql.purge(queue))

    def _delete(self, queue: str, exchange: str | None = None, routing_key: str = "", *args: Any,
                **kwargs: Any) -> None:
        """Deleting a transient queue (e.g. a reply queue once its replies are in) removes
        its binding; deleting a durable one leaves its jobs alone: rows belong to Chancy's
        queue."""
        if self._is_transient(queue) and exchange:
            transport = self.connection
            run_reconnecting(transport.database,
                             lambda: single(transport.transient_sql.unbind(exchange, routing_key, queue)),
                             f"unbind queue {queue}")

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    # --- acknowledgement: the row, not kombu's memory, is the truth -----------------------
    def _write_delivery(self, delivery_tag: str, statement: Callable[[uuid.UUID, int, str], Statement]) -> None:
        """Apply an outcome to the row of one delivery (guarded by it, so sending it again
        after a dropped connection is harmless)."""
        job_id, attempt = protocol.parse_delivery_tag(delivery_tag)
        transport = self.connection
        if not run_reconnecting(transport.database, lambda: single(statement(job_id, attempt, transport.consumer_id)),
                                f"delivery {delivery_tag}"):
            # Usual with acks_late (the result backend finished the row first); otherwise
            # the row was recovered, retried or cancelled meanwhile.
            log.debug("delivery %s: row no longer running under %s", delivery_tag, transport.consumer_id)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        """Acknowledge a delivery. An ack that leaves the row to the result backend is,
        on Celery's event loop, gathered and sent with the next claim (or by a timer soon
        after): the row stays running under the consumer either way until its outcome is
        stored, so nothing is lost if the consumer dies meanwhile. One that finishes the
        row (no outcome to wait for) is sent at once, as every ack off the loop."""
        if self._transient_tags.pop(delivery_tag, None) is not None:  # taken when delivered
            super().basic_ack(delivery_tag, multiple)
            return
        message = self.qos._delivered.get(delivery_tag)
        ignore_result = bool(message is not None and (message.headers or {}).get("ignore_result"))
        job_id, attempt = protocol.parse_delivery_tag(delivery_tag)
        ack = Ack(job_id, attempt, finish=ignore_result or not self.connection.results_arrive_via_backend)
        if not ack.finish and self.connection.gathers_acks():
            self._acks.append(ack)
            self.connection.send_acks_soon()
        else:
            self._send_acks([ack])
        super().basic_ack(delivery_tag, multiple)

    def send_acks(self) -> None:
        """Send the acks gathered on the event loop (its timer's, or the channel closing)."""
        acks, self._acks = self._acks, []
        if acks:
            try:
                self._send_acks(acks)
            except BaseException:
                self._acks = acks + self._acks
                raise

    def _send_acks(self, acks: list[Ack]) -> None:
        transport = self.connection
        statement = transport.transport_sql.ack(transport.consumer_id, acks)
        if not run_reconnecting(transport.database, lambda: single(statement), f"acknowledge {len(acks)} deliveries"):
            # Usual with acks_late (the result backend finished the rows first); otherwise
            # the rows were recovered, retried or cancelled meanwhile.
            log.debug("acks of %d deliveries: no row running under %s", len(acks), transport.consumer_id)

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Also put back the rows claimed ahead for a queue no longer consumed."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._release_claimed([queue])
        return result

    def close(self) -> None:
        """Send the gathered acks and put back the rows claimed ahead, then close
        (kombu requeues the delivered, unacknowledged messages: :meth:`_restore`)."""
        if not self.closed:
            self.send_acks()
            self._release_claimed(list(self._claimed))
        super().close()

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if delivery_tag in self._transient_tags:  # a requeue stores it again (_restore)
            super().basic_reject(delivery_tag, requeue)
            self._transient_tags.pop(delivery_tag, None)
            return
        if not requeue:
            consumer = self.connection.consumer_id
            error = _error("celery.Reject", f"rejected without requeue by Celery consumer {consumer} "
                                            "(e.g. an unregistered task name; see the Celery worker's log)")
            self._write_delivery(
                delivery_tag,
                lambda job_id, attempt, who: self.connection.transport_sql.fail(job_id, attempt, who, error),
            )
        super().basic_reject(delivery_tag, requeue)  # requeue goes through _restore

    def _restore(self, message: Any) -> None:
        """Put an unacknowledged delivery back on its queue (a requeue, a channel closing
        with prefetched messages): the same row, not a copy; a message of a transient
        queue is stored in that queue again."""
        queue = self._transient_tags.pop(message.delivery_tag, None)
        if queue is not None:
            self._put_transient(queue, message.serializable())
            return
        self._write_delivery(message.delivery_tag, self.connection.transport_sql.requeue)


class Transport(virtual.Transport):
    """The ``chancy`` kombu transport."""

    Channel = Channel
    driver_type = "chancy"
    driver_name = "psycopg"
    # kombu types these as its base class's values (None, one-error tuples).
    default_port = 5432  # type: ignore[assignment]
    connection_errors = virtual.Transport.connection_errors + (psycopg.OperationalError,)  # type: ignore[assignment]
    channel_errors = virtual.Transport.channel_errors + (psycopg.DatabaseError,)  # type: ignore[assignment]
    # kombu declares both None on its base class; virtual.Transport sets them in __init__.
    channels: list[Any]  # type: ignore[assignment]
    cycle: Any
    implements = virtual.Transport.implements.extend(
        asynchronous=True, exchange_type=frozenset(["direct", "topic", "fanout"]))

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self.dsn = _dsn_of(client)
        names = Names(options.get("prefix", "chancy_"))
        self.prefix = names.prefix
        self.job_sql = JobSQL(names)
        self.transport_sql = TransportSQL(names)
        self.transient_sql = TransientSQL(names)
        self.worker_sql = WorkerSQL(names)
        self.cluster_sql = ClusterSQL(names)
        self.accept_content = protocol.accepted_content_types(options.get("accept_content", ["json"]))
        self.lower_priority_first = bool(options.get("lower_priority_first", False))
        self._await_results = options.get("await_results")
        self.heartbeat_interval = float(options.get("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL))
        self.consumer_timeout = float(options.get("consumer_timeout", DEFAULT_CONSUMER_TIMEOUT))
        if self.heartbeat_interval <= 0 or self.consumer_timeout <= 2 * self.heartbeat_interval:
            raise ConfigurationError(
                "chancy transport: need heartbeat_interval > 0 and consumer_timeout > 2 * heartbeat_interval "
                f"(got {self.heartbeat_interval} and {self.consumer_timeout})"
            )
        statements, self._listen = statement_and_listen_connections(self.dsn, options.get("session_url"))
        self.database = SchemaCheckedConnection(self.dsn, names, behind_pooler=statements.behind_pooler)
        self._consumer_id: str | None = None
        self._registered_pid = 0
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None
        #: A claim failed on a dropped connection, so it may have committed unseen.
        self.claim_uncertain = False
        #: Transient queues notified since last found empty, and when each was.
        self._notified: set[str] = set()
        #: A notification came during this round of reads: read again before waiting.
        self._woken = False
        self._found_empty_at: dict[str, float] = {}
        #: Delivery from Celery's event loop, once registered with one.
        self._hub_delivery: HubDelivery | None = None

    @property
    def consumer_id(self) -> str:
        """This process's consumer identity (a new one after a fork)."""
        if self._consumer_id is None or self._registered_pid != os.getpid():
            self._consumer_id = f"celery:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._registered_pid = 0
        return self._consumer_id

    @property
    def results_arrive_via_backend(self) -> bool:
        """Whether outcomes of tasks this consumer runs are written by the Chancy result
        backend (option ``await_results``; by default: the current Celery app's
        ``result_backend`` is a ``chancy+`` URL)."""
        if self._await_results is not None:
            return bool(self._await_results)
        celery = sys.modules.get("celery")
        if celery is None:
            return False
        backend = celery.current_app.conf.result_backend
        return isinstance(backend, str) and backend.startswith("chancy+")

    def release_undelivered(self) -> None:
        """Put back the rows a claim committed without this consumer hearing of it (its
        connection dropped before the answer), instead of holding them for as long as
        the consumer lives; a row delivered, claimed ahead or acknowledged here stays."""
        held = [job_id for channel in self.channels for job_id in channel.held_rows()]
        released = self.database.run(single(self.transport_sql.release_undelivered(self.consumer_id, held)))
        self.claim_uncertain = False
        if released:
            log.warning("put back %d row(s) a lost claim had taken", released)

    # --- liveness -----------------------------------------------------------------------
    def ensure_registered(self) -> None:
        """Register the consumer (before its first claim) and keep it heartbeating."""
        consumer = self.consumer_id
        if self._registered_pid == os.getpid():
            return
        self.database.run(single(self._heartbeat(consumer)))
        self._registered_pid = os.getpid()
        self._stop = threading.Event()
        self._beat_thread = threading.Thread(
            target=self._beat, args=(weakref.ref(self), consumer, self._stop), name="chancy-kombu-heartbeat",
            daemon=True)
        self._beat_thread.start()

    def _heartbeat(self, consumer: str) -> Statement:
        return self.worker_sql.heartbeat(consumer, socket.gethostname(), os.getpid(), [], ["celery"], [],
                                         ttl=self.consumer_timeout)

    @staticmethod
    def _beat(transport_ref: "weakref.ref[Transport]", consumer: str, stop: threading.Event) -> None:
        """Heartbeat, and recover rows of holders that stopped heartbeating: a fleet of
        Celery workers alone (no Chancy worker, hence no leader) must still recover.
        Holds the transport weakly: a transport dropped without being closed ends it."""
        transport = transport_ref()
        if transport is None:
            return
        database = ProcessConnection(transport.dsn, behind_pooler=transport.database.behind_pooler)
        interval = transport.heartbeat_interval
        deregister = transport.worker_sql.deregister(consumer)
        del transport
        try:
            while not stop.wait(interval):
                transport = transport_ref()
                if transport is None:
                    return
                try:
                    database.run(single(transport._heartbeat(consumer)))
                    recovered = database.run(single(transport.cluster_sql.recover(RECOVERY_BATCH)))
                    if recovered:
                        log.warning("recovered %d job(s) from stopped workers or consumers", len(recovered))
                    database.run(single(transport.transient_sql.prune()))
                except psycopg.Error as exc:
                    log.warning("chancy transport heartbeat failed (%s)", exc)
                del transport
        finally:
            try:
                database.run(single(deregister))
            except psycopg.Error:
                pass
            database.close()

    # --- waiting for work -----------------------------------------------------------------
    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """Deliver one message; when there is none, wait on LISTEN, so a push wakes the
        consumer at once and ``polling_interval`` only paces scheduled rows. With a
        ``timeout``, a consumer of job queues (Celery's blocking worker loop, under eventlet
        or gevent) returns after at most one wait, so it sees a shutdown request within
        ``polling_interval`` instead of ``timeout``; one of transient queues only
        (``inspect`` collecting replies, which stops at the first timeout) waits out the
        whole ``timeout``."""
        started = time.monotonic()
        return_early = self._consumes_jobs()
        waited = False
        while True:
            self._woken = False
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            remaining = None if timeout is None else timeout - (time.monotonic() - started)
            if remaining is not None and (remaining <= 0 or (waited and return_early)):
                raise socket.timeout()
            if not self._woken:  # a notification read meanwhile (transient_due) is not waited for again
                interval = self.polling_interval
                self._wait_for_push(interval if remaining is None else min(interval, remaining))
            waited = True

    def _consumes_jobs(self) -> bool:
        return any((self.prefix, queue) not in _TRANSIENT_QUEUES
                   for channel in self.channels for queue in channel._active_queues)

    def _wait_for_push(self, seconds: float) -> None:
        """Wait for a push or a message (or ``seconds``); ``0`` only reads what has come."""
        try:
            for notify in self.listening().notifications(timeout=seconds, stop_after=None if seconds == 0 else 1):
                if notify.channel != self.transient_sql.channel:
                    self._woken = True
                elif (self.prefix, notify.payload) in _TRANSIENT_QUEUES:
                    self._notified.add(notify.payload)
                    self._woken = True
        except psycopg.OperationalError:
            self._listen.close()
            time.sleep(seconds)

    # --- reading transient queues only when there is something to read -----------------
    def transient_due(self, queue: str) -> bool:
        """Whether a consumer should read a transient queue now: a message was notified
        for it, or ``polling_interval`` has passed since it was last found empty (in case
        a notification was missed). Spares a busy worker a query of its remote-control
        queue between every two tasks."""
        self._wait_for_push(0)
        return (queue in self._notified
                or time.monotonic() - self._found_empty_at.get(queue, -math.inf) >= self.polling_interval)

    def transient_read(self, queue: str, found: bool) -> None:
        """Note a read: after an empty one, wait for a notification (or the interval)."""
        if not found:
            self._notified.discard(queue)
            self._found_empty_at[queue] = time.monotonic()

    # --- Celery's event loop (asynloop): see chancy.compat.kombu_loop ------------------
    @property
    def on_event_loop(self) -> bool:
        """Delivering from Celery's event loop (claims then wait for room enough)."""
        return self._hub_delivery is not None and not self._hub_delivery.closed

    def gathers_acks(self) -> bool:
        """Whether an ack made now is gathered: on the event loop's own thread, whose
        timer sends it (a thread pool's threads ack at once)."""
        return self.on_event_loop and self._hub_delivery.on_loop_thread()  # type: ignore[union-attr]

    def send_acks_soon(self) -> None:
        if self._hub_delivery is not None:
            self._hub_delivery.send_acks_soon()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        if self._hub_delivery is not None:
            self._hub_delivery.close()
        self._hub_delivery = HubDelivery(self, loop)
        self._hub_delivery.start()

    def on_readable(self, fileno: int) -> None:  # type: ignore[override]  # the hub passes the fd (as to redis')
        """One of the sockets the hub polls for this transport can be read."""
        if self._hub_delivery is not None:
            self._hub_delivery.on_readable(fileno)

    def listening(self) -> Listening:
        """The connection LISTENing for pushes and for messages of transient queues
        (connected first if it is down)."""
        return self._listen.listen(self.transient_sql.channel, self.job_sql.pushed_channel)

    def read_notifications(self) -> bool:
        """Read the notifications that have come, without waiting: whether one announced
        work for this consumer since the last call (also one :meth:`transient_due` read)."""
        self._wait_for_push(0)
        woken, self._woken = self._woken, False
        return woken

    def close_connection(self, connection: Any) -> None:
        if self._hub_delivery is not None:
            self._hub_delivery.close()
        super().close_connection(connection)
        self._stop.set()
        if self._beat_thread is not None and self._registered_pid == os.getpid():
            self._beat_thread.join(timeout=5)
        self._listen.close()
        self.database.close()


TRANSPORT_ALIASES.setdefault("chancy", "chancy.compat.kombu:Transport")
