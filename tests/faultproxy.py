"""A TCP fault proxy in front of a test Postgres, to break the network on purpose.

It listens on 127.0.0.1 only and forwards each connection to Postgres (host and port, or
the unix socket a throwaway server listens on). From the test's thread, at any moment:

- ``cut()`` closes every open connection at once (an RST to the client);
- ``blackhole()`` stops forwarding bytes both ways without closing anything, so clients
  hang until their own timeouts; ``restore()`` lets them flow again (a healed partition);
- ``drop_reply_after(pattern)`` lets the next statement whose SQL contains ``pattern``
  reach the server and run to its end, swallows the server's whole answer, then cuts that
  connection (or leaves it silent): the statement committed, the client never heard so.

The proxy reads the Postgres wire protocol, not raw chunks, so a pattern matches a
statement however psycopg sends it: as a simple query, as an unnamed Parse, or as a
prepared statement whose Parse (sent once, when psycopg prepared it) held the pattern
and whose later Binds carry only its name. It answers SSL/GSS encryption requests with
"no" itself, so the stream stays readable (clients with ``sslmode=require`` fail).

One thread runs the proxy's event loop; every control waits until the loop has applied it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, TypeVar

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_ENCRYPTION_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest
_PROTOCOL_3 = 196608
_CONTROL_TIMEOUT = 10.0
_CHUNK = 1 << 16
T = TypeVar("T")


@dataclass(frozen=True)
class Upstream:
    """Where the proxy forwards to: a host name or a unix socket directory, and a port."""

    host: str
    port: int

    @classmethod
    def from_dsn(cls, dsn: str) -> Upstream:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/tmp")
        if "," in host:
            raise ValueError(f"one upstream host only, got {host!r}")
        return cls(host, int(params.get("port") or 5432))

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        return await asyncio.open_connection(self.host, self.port)


def _cstring(data: bytes, start: int) -> tuple[bytes, int]:
    """The NUL-terminated string at ``start`` and the offset just past its NUL."""
    end = data.index(b"\0", start)
    return data[start:end], end + 1


class DroppedReply:
    """An armed ``drop_reply_after``: what it looks for, what to do once the statement has
    been answered, and what happened."""

    def __init__(self, pattern: bytes, then: Literal["cut", "hang"]) -> None:
        self.pattern = pattern
        self.then = then
        self.data_rows = 0  # result rows the client never saw (a claim's: the jobs it took)
        self._done = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Whether the statement ran and its answer was swallowed within ``timeout`` s."""
        return self._done.wait(timeout)


@dataclass(eq=False)  # kept in a set: hashed by identity
class _Connection:
    """One proxied connection and what the proxy knows of its protocol state."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    started: bool = False  # the startup message went by: client messages are typed now
    sync_points: int = 0  # startup, Sync and Query messages sent: each gets one ReadyForQuery
    ready_seen: int = 0  # ReadyForQuery messages the server sent
    statements: dict[bytes, bytes] = field(default_factory=dict)  # text of each parsed statement, by name
    drop: DroppedReply | None = None  # set when this connection's next answer is to be swallowed
    answers_before_drop: int = 0  # ReadyForQuery messages still owed to the client

    def abort(self) -> None:
        """Close both sides now; the client gets an RST rather than an orderly FIN."""
        sock = self.client.get_extra_info("socket")
        if not self.client.transport.is_closing() and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.client.transport.abort()
        self.server.transport.abort()


class FaultProxy:
    """A proxy to one Postgres that a test can cut, blackhole and make lose an answer."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.accepted_connections = 0
        self._connections: set[_Connection] = set()
        self._drop: DroppedReply | None = None
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopping = asyncio.Event()
        self._listening = threading.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name="faultproxy", daemon=True)
        self._thread.start()
        if not self._listening.wait(_CONTROL_TIMEOUT) or self._server is None:
            raise RuntimeError("the fault proxy did not start listening")
        self.port: int = self._server.sockets[0].getsockname()[1]

    @classmethod
    def for_dsn(cls, dsn: str) -> FaultProxy:
        return cls(Upstream.from_dsn(dsn))

    def dsn(self, dsn: str) -> str:
        """``dsn`` (same database, user, options) reached through this proxy."""
        return make_conninfo(dsn, host="127.0.0.1", port=self.port)

    # --- controls, called from any thread ----------------------------------------------

    def cut(self) -> None:
        """Close every open connection now."""
        self._control(self._cut_all)

    def blackhole(self) -> None:
        """Stop forwarding in both directions; connections stay open and new ones hang."""
        self._control(self._flowing.clear)

    def restore(self) -> None:
        """Forward again, including what blackholed connections sent meanwhile."""
        self._control(self._flowing.set)

    def drop_reply_after(self, pattern: bytes, then: Literal["cut", "hang"] = "cut") -> DroppedReply:
        """Swallow the answer to the next statement whose SQL contains ``pattern``, then cut
        its connection (or, with ``then="hang"``, leave it open and silent). The returned
        handle's ``wait`` returns True once the server has finished that statement
        (committed it, in autocommit) and the client has been left without the answer."""
        drop = DroppedReply(pattern, then)
        self._control(lambda: setattr(self, "_drop", drop))
        return drop

    @property
    def open_connections(self) -> int:
        return self._control(lambda: len(self._connections))

    def close(self) -> None:
        """Stop listening, cut every connection and end the proxy's thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(_CONTROL_TIMEOUT)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _control(self, action: Callable[[], T]) -> T:
        async def apply() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(apply(), self._loop).result(_CONTROL_TIMEOUT)

    def _cut_all(self) -> None:
        for connection in list(self._connections):
            self._abort(connection)

    def _abort(self, connection: _Connection) -> None:
        connection.abort()
        self._connections.discard(connection)

    # --- the event loop's side ---------------------------------------------------------

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._proxy, "127.0.0.1", 0)
        self._listening.set()
        async with self._server:
            await self._stopping.wait()
            self._server.close()
            self._cut_all()
            self._flowing.set()  # pumps held by a blackhole wake up to find their sockets closed
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _proxy(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self.accepted_connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            server_reader, server = await self.upstream.open()
        except OSError:
            client.transport.abort()  # as if the server refused: the client sees it at once
            self._handlers.discard(handler)
            return
        connection = _Connection(client, server)
        self._connections.add(connection)
        await asyncio.gather(self._pump(connection, self._pump_client(connection, client_reader)),
                             self._pump(connection, self._pump_server(connection, server_reader)))
        self._handlers.discard(handler)

    async def _pump(self, connection: _Connection, pump: Coroutine[None, None, None]) -> None:
        """Run one direction; when it ends, for whatever reason, the other must end too."""
        try:
            await pump
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._abort(connection)

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        """What arrived (b"" at the end), read only while the proxy forwards: a blackhole
        holds bytes back, in the kernel's buffers or here."""
        await self._flowing.wait()
        data = await reader.read(_CHUNK)
        await self._flowing.wait()
        return data

    async def _pump_client(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        """Client to server, message by message, watching for the armed statement."""
        pending = b""
        while chunk := await self._read(reader):
            messages, pending = _split(pending + chunk, typed=connection.started)
            forward = [message for message in messages if self._from_client(connection, message)]
            connection.server.write(b"".join(forward))
            await connection.server.drain()

    def _from_client(self, connection: _Connection, message: bytes) -> bool:
        """Whether to forward ``message``; an encryption request is answered "no" here."""
        if connection.started:
            self._inspect(connection, message[:1], message[5:])
            return True
        code = struct.unpack_from("!i", message, 4)[0]
        if code in _ENCRYPTION_REQUESTS:
            connection.client.write(b"N")
            return False
        connection.started = code == _PROTOCOL_3
        connection.sync_points += connection.started  # the server answers startup with a ReadyForQuery
        return True

    def _inspect(self, connection: _Connection, kind: bytes, body: bytes) -> None:
        """Remember each statement's text; arm the connection when one holding the armed
        pattern is about to run."""
        if kind == b"P":
            name, offset = _cstring(body, 0)
            connection.statements[name], _ = _cstring(body, offset)
        elif kind == b"B":
            _, offset = _cstring(body, 0)
            statement, _ = _cstring(body, offset)
            self._arm_if_matching(connection, connection.statements.get(statement, b""))
        elif kind == b"Q":
            self._arm_if_matching(connection, body)
        if kind in (b"S", b"Q"):
            connection.sync_points += 1

    def _arm_if_matching(self, connection: _Connection, query: bytes) -> None:
        if self._drop is None or connection.drop is not None or self._drop.pattern not in query:
            return
        connection.drop, self._drop = self._drop, None
        connection.answers_before_drop = connection.sync_points

    async def _pump_server(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        """Server to client, message by message, swallowing an answer to drop."""
        pending = b""
        while chunk := await self._read(reader):
            messages, pending = _split(pending + chunk, typed=True)
            forward = [message for message in messages if self._from_server(connection, message)]
            connection.client.write(b"".join(forward))
            await connection.client.drain()
            drop = connection.drop
            if drop is not None and connection.ready_seen > connection.answers_before_drop:
                if drop.then == "cut":
                    self._abort(connection)
                drop._done.set()

    @staticmethod
    def _from_server(connection: _Connection, message: bytes) -> bool:
        """Whether to forward ``message``: not once the dropped statement's answer began."""
        drop = connection.drop
        forward = drop is None or connection.ready_seen < connection.answers_before_drop
        if drop is not None and not forward and message[:1] == b"D":
            drop.data_rows += 1
        connection.ready_seen += message[:1] == b"Z"
        return forward


def _split(data: bytes, *, typed: bool) -> tuple[list[bytes], bytes]:
    """The complete protocol messages at the start of ``data``, and the incomplete rest.
    ``typed``: whether messages start with a type byte (all but a client's first ones do;
    a client sends nothing after its startup message until the server answers it)."""
    messages = []
    offset = 0
    header = 5 if typed else 4
    while True:
        if len(data) - offset < header:
            break
        size = struct.unpack_from("!i", data, offset + header - 4)[0] + header - 4
        if len(data) - offset < size:
            break
        messages.append(data[offset:offset + size])
        offset += size
    return messages, data[offset:]
