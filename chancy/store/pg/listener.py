"""One LISTEN connection per process, shared by everything that waits on notifications:
worker loops (new jobs, cancels) and waiters (finished jobs). It reconnects with backoff
when the connection drops and tells subscribers, so they can re-check what they might
have missed while deaf. Its connection is a dedicated session (on ``session_dsn``): a
LISTEN lives as long as the session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Awaitable, Callable, Iterator

import psycopg
from psycopg import sql

from chancy.store.pg.session import SESSION_SQL

log = logging.getLogger("chancy.listener")

Callback = Callable[[str], None]

HEALTH_CHECK_INTERVAL = 5.0  # a silent connection is probed this often, so a dead link is noticed


class Listener:
    def __init__(self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], channels: list[str]) -> None:
        self._connect = connect
        self._channels = list(channels)
        self._subscribers: dict[str, set[Callback]] = defaultdict(set)
        self._reconnect_subscribers: set[Callable[[], None]] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn: psycopg.AsyncConnection | None = None

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(payload)`` for each notification on ``channel``; returns an
        unsubscribe function."""
        if channel not in self._channels:
            raise ValueError(f"Listener does not listen on {channel!r}")
        self._subscribers[channel].add(callback)
        return lambda: self._subscribers[channel].discard(callback)

    def add_channel(self, channel: str) -> bool:
        """Listen on ``channel`` too from the next (re)connection on; False if it already
        was. Call :meth:`restart` to make it take effect now."""
        if channel in self._channels:
            return False
        self._channels.append(channel)
        return True

    async def restart(self, timeout: float | None = None) -> None:
        """Reconnect now (e.g. after :meth:`add_channel`). Reconnect subscribers are told,
        as after any reconnect, so nothing sent in between goes unnoticed."""
        await self.stop()
        await self.start(timeout)
        self._fire_reconnected()

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._reconnect_subscribers.add(callback)
        return lambda: self._reconnect_subscribers.discard(callback)

    async def start(self, timeout: float | None = None) -> None:
        """Start listening; returns once LISTEN is in effect (or raises after ``timeout``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="chancy-listener")
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    @property
    def listening(self) -> bool:
        return self._ready.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._ready.clear()

    async def _run(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                async with await self._connect() as conn:
                    self._conn = conn
                    for channel in self._channels:
                        await conn.execute(SESSION_SQL.composed("listen", channel=sql.Identifier(channel)))
                    self._ready.set()
                    if not first:
                        log.info("LISTEN connection re-established")
                        self._fire_reconnected()
                    first, delay = False, 0.1
                    while True:
                        async for notify in conn.notifies(timeout=HEALTH_CHECK_INTERVAL):
                            self._dispatch(notify.channel, notify.payload)
                        await conn.execute(SESSION_SQL["probe"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means reconnect
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", exc, delay)
                self._ready.clear()
            finally:
                self._conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in list(self._subscribers.get(channel, ())):
            try:
                callback(payload)
            except Exception:  # noqa: BLE001 - one bad subscriber must not deafen the rest
                log.exception("notification subscriber failed")

    def _fire_reconnected(self) -> None:
        for callback in list(self._reconnect_subscribers):
            try:
                callback()
            except Exception:  # noqa: BLE001
                log.exception("reconnect subscriber failed")


class KeyedEvents:
    """Events keyed by notification payload (e.g. a job id), so that one subscription
    wakes exactly the waiters of that key however many there are."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)

    def fire(self, key: str) -> None:
        for event in self._events.get(key, ()):
            event.set()

    def fire_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._events[key].add(event)
        try:
            yield event
        finally:
            self._events[key].discard(event)
            if not self._events[key]:
                del self._events[key]
