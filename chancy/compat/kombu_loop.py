"""Chancy's kombu transport inside Celery's event loop (kombu's ``Hub``).

A transport that declares ``implements.asynchronous`` gets Celery's ``asynloop``:
nothing calls ``drain_events``, the hub polls sockets and fires timers, and the
transport delivers from callbacks that must never wait. Without it Celery runs the
blocking ``synloop``, where a prefork worker whose processes are all busy blocks in
``pool.apply_async`` (``worker_pool_putlocks``) and answers no remote control —
``celery inspect``, ``app.control``, Flower — until a process frees (issue 25).

Delivery is woken by:

- the LISTEN connection's socket turning readable: a notification of a push or of a
  message for a transient queue (a remote-control command, a reply);
- a repeating timer every ``polling_interval``: rows that come without a notification
  (eta rows falling due, retries, anything pushed while the LISTEN connection was down),
  transient queues due a check, and LISTENing again after an outage;
- a turn of the hub (no query) in which a consumer was added, or a channel held back by
  its prefetch limit can take more again (acks freed half of it: see
  ``Channel._claim_size``; one claim then serves several deliveries).

Acks made on the loop are gathered and sent with the next claim, in its transaction, or
by a timer :data:`ACK_DELAY` after the first (see ``Channel.basic_ack``): a commit serves
several tasks instead of one per ack and one per claim.

Each wake-up delivers one message through the transport's usual path (the same claim,
QoS, acks and redelivery as ``drain_events``), then asks for another turn through a
pipe the hub polls, as Redis' transport delivers one message per readable socket: a solo
worker running tasks inline still fires timers and answers remote control between two
tasks. A failed statement makes that round find nothing (the transport logs it), and
the timer tries again an interval later, as the synchronous path waits an interval.
"""

from __future__ import annotations

import logging
import os
import threading
from queue import Empty
from typing import TYPE_CHECKING, Any

import psycopg

from chancy.store.pg.celery_connection import Listening, first_line

if TYPE_CHECKING:
    from chancy.compat.kombu import Transport

log = logging.getLogger("chancy.compat.kombu")

#: Seconds between timer wake-ups when the transport has no ``polling_interval``.
DEFAULT_INTERVAL = 1.0
#: Seconds an ack made on the loop waits at most for a claim to carry it.
ACK_DELAY = 0.02


class HubDelivery:
    """Delivers one transport's messages from a kombu ``Hub`` (``loop``): registered by
    :meth:`start`, unregistered by :meth:`close` (the transport closing)."""

    def __init__(self, transport: "Transport", loop: Any) -> None:
        self.transport = transport
        self.loop = loop
        self.interval = transport.polling_interval or DEFAULT_INTERVAL
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        #: A byte is in the pipe: the hub will call :meth:`_deliver_one`.
        self._armed = False
        #: The LISTEN connection whose socket the hub polls, and that socket.
        self._listening: Listening | None = None
        self._listen_fd: int | None = None
        #: Channels whose last round was held back by their prefetch limit.
        self._held: list[Any] = []
        #: The hub's thread (where acks are gathered), and whether a timer will send them.
        self._thread = threading.get_ident()
        self._acks_due = False
        #: The queues consumed at the last round.
        self._consumed: list[str] = []
        self._timer: Any = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread

    # --- registration ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.get_ident()
        self._add_reader(self._wake_read)
        self.loop.on_tick.add(self._on_tick)
        self._timer = self.loop.call_repeatedly(self.interval, self._on_interval)
        self._listen()
        self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.loop.on_tick.discard(self._on_tick)
        self._forget_listen()
        self._remove_reader(self._wake_read)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _add_reader(self, fd: int) -> None:
        self.loop.add_reader(fd, self.transport.on_readable, fd)

    def _remove_reader(self, fd: int) -> None:
        """Stop polling ``fd`` if the hub still polls it for us: once a socket is closed
        its number may be reused, and another reader of that number is not ours."""
        if self.loop.readers.get(fd) == (self.transport.on_readable, (fd,)):
            self.loop.remove_reader(fd)

    # --- the hub's callbacks ----------------------------------------------------------------
    def on_readable(self, fileno: int) -> None:
        if fileno == self._wake_read:
            self._on_wake()
        elif fileno == self._listen_fd:
            self._on_notified()

    def _on_wake(self) -> None:
        try:
            os.read(self._wake_read, 64)
        except BlockingIOError:
            pass
        self._armed = False
        self._deliver_one()

    def _on_notified(self) -> None:
        """Read what the LISTEN connection received, without waiting."""
        if self.transport.read_notifications():
            self._wake()
        if self._listening is not None and self._listening.closed:  # the read failed
            self._forget_listen()

    def _on_interval(self) -> None:
        self._listen()
        self._wake()

    def _on_tick(self) -> None:
        """Between two turns of the hub, without a query: deliver when a consumer was
        added, or when a channel held back by its prefetch limit can take more."""
        consumed = self._consumed_queues()
        if consumed != self._consumed or any(channel.wants_delivery() for channel in self._held):
            self._consumed = consumed
            self._held = []
            self._wake()

    # --- delivering -------------------------------------------------------------------------
    def _wake(self) -> None:
        """Have the hub call :meth:`_deliver_one` at its next turn."""
        if self._armed or self._closed:
            return
        self._armed = True
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:  # full: the hub has bytes to read already
            pass

    def _deliver_one(self) -> None:
        transport = self.transport
        self._consumed = self._consumed_queues()
        try:
            transport.cycle.get(transport._deliver, timeout=0)
        except Empty:
            if transport.read_notifications():  # heard during the round (transient_due)
                self._wake()
            self._held = [channel for channel in transport.channels
                          if channel._consumers and not channel.wants_delivery()]
            return
        self._wake()  # more may be waiting

    # --- gathered acks ----------------------------------------------------------------------
    def send_acks_soon(self) -> None:
        """Have the acks gathered so far sent within :data:`ACK_DELAY`, if no claim
        carries them first."""
        if self._acks_due or self._closed:
            return
        self._acks_due = True
        self.loop.call_later(ACK_DELAY, self._send_acks)

    def _send_acks(self) -> None:
        self._acks_due = False
        if self._closed:  # the channels sent theirs as they closed
            return
        for channel in list(self.transport.channels):
            channel.send_acks()

    def _consumed_queues(self) -> list[str]:
        return [queue for channel in self.transport.channels for queue in channel._active_queues]

    # --- the LISTEN connection -------------------------------------------------------------
    def _listen(self) -> None:
        """Poll the LISTEN connection's socket; connect it first if it is down (the one
        polled stays the transport's until it closes: it reconnects only then)."""
        if self._listening is not None and not self._listening.closed:
            return
        self._forget_listen()
        try:
            listening = self.transport.listening()
        except psycopg.Error as exc:
            log.warning("listening for pushes failed (%s); trying again in %.1f s", first_line(exc), self.interval)
            return
        self._listening, self._listen_fd = listening, listening.fileno()
        self._add_reader(self._listen_fd)
        self._on_notified()  # notifications that came while LISTEN ran are read already

    def _forget_listen(self) -> None:
        if self._listen_fd is not None:
            self._remove_reader(self._listen_fd)
        self._listening, self._listen_fd = None, None
