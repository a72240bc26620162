"""The process's LISTEN connection (chancy.store.pg.listener): it hears the channels it was
given and those added later, and after its session is ended from outside it reconnects,
listens again and tells its reconnect subscribers."""

import asyncio

import psycopg

from chancy.store.pg.listener import Listener


async def _notify(dsn: str, channel: str, payload: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


async def _heard(queue: asyncio.Queue, timeout: float = 10) -> str:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_hears_added_channels_and_listens_again_after_reconnecting(dsn):
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    listener = Listener(connect, ["first"])
    heard: asyncio.Queue = asyncio.Queue()
    reconnected = asyncio.Event()
    listener.subscribe("first", lambda payload: heard.put_nowait(("first", payload)))
    listener.on_reconnect(reconnected.set)
    await listener.start(timeout=10)
    try:
        await _notify(dsn, "first", "a")
        assert await _heard(heard) == ("first", "a")

        assert listener.add_channel("Second Channel")  # quoted as an identifier
        assert not listener.add_channel("Second Channel")
        listener.subscribe("Second Channel", lambda payload: heard.put_nowait(("second", payload)))
        await listener.restart(timeout=10)
        assert reconnected.is_set()
        await _notify(dsn, "Second Channel", "b")
        assert await _heard(heard) == ("second", "b")

        reconnected.clear()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            # The listener's is the only other session of this test's database.
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE pid <> pg_backend_pid() AND datname = current_database()")
        await asyncio.wait_for(reconnected.wait(), 30)
        await _notify(dsn, "first", "c")
        assert await _heard(heard) == ("first", "c")
    finally:
        await listener.stop()
