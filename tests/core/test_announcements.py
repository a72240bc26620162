"""Pushes Chancy commits itself are announced from a transaction of their own
(chancy.queues.announcer): the push's commit takes no NOTIFY lock, the first push after a
quiet spell is announced at once, a burst as few wake-ups, and nothing due is dropped
when the app closes or the process exits."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from chancy import Chancy, Job, Queue
from chancy.queues.announcer import LoopAnnouncer, ThreadAnnouncer

ROOT = Path(__file__).resolve().parents[2]


def _listening(app: Chancy, dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"LISTEN {app.job_sql.pushed_channel}")
    return conn


def _heard(listener: psycopg.Connection, timeout: float) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=timeout, stop_after=1)]


async def _migrated(dsn: str, **options) -> Chancy:
    app = Chancy(dsn, plugins=[Queue("default"), Queue("other")], **options)
    await app.migrate()
    return app


def test_a_sync_push_commits_without_notifying_and_is_announced_after(dsn):
    app = asyncio.run(_migrated(dsn))
    held: list[list[str]] = []
    app.announcer_sync = ThreadAnnouncer(held.append)
    with app, _listening(app, dsn) as listener:
        ref = app.push_sync(Job("tests.noop"))
        assert app.get_job_sync(ref).state.value == "pending"
        assert _heard(listener, 0.3) == []  # the push's own transaction sent nothing
        app.announcer_sync.close()
        assert held == [["default"]]
        app.announcer_sync = ThreadAnnouncer(app._send_announcement_sync)
        app.push_sync(Job("tests.noop", queue="other"))
        assert _heard(listener, 5) == ["other"]
        # A job scheduled for later is not announced: workers find it when it is due.
        app.push_sync(Job("tests.noop", scheduled_at=datetime.datetime.now(datetime.timezone.utc)
                          + datetime.timedelta(hours=1)))
        assert _heard(listener, 0.3) == []


def test_the_first_push_is_announced_at_once_a_burst_once_per_window_and_close_sends_the_rest(dsn):
    app = asyncio.run(_migrated(dsn))
    app.announcer_sync = ThreadAnnouncer(app._send_announcement_sync, window=30.0)
    with app, _listening(app, dsn) as listener:
        app.push_sync(Job("tests.noop"))
        assert _heard(listener, 5) == ["default"]
        app.push_sync(Job("tests.noop"))
        app.push_sync(Job("tests.noop", queue="other"))
        assert _heard(listener, 0.3) == []  # inside the window: held back
        started = time.monotonic()
        app.close_sync()  # does not wait out the window
        assert time.monotonic() - started < 5
        assert sorted(n.payload for n in listener.notifies(timeout=1, stop_after=2)) == ["default", "other"]


def test_a_burst_is_announced_at_most_once_per_window(dsn):
    app = asyncio.run(_migrated(dsn))
    sent: list[list[str]] = []

    def send(queues: list[str]) -> None:
        sent.append(queues)
        app._send_announcement_sync(queues)

    window = 0.05
    app.announcer_sync = ThreadAnnouncer(send, window=window)
    with app:
        started = time.monotonic()
        for _ in range(60):
            app.push_sync(Job("tests.noop"))
        elapsed = time.monotonic() - started
        app.announcer_sync.close()
    assert 1 <= len(sent) <= elapsed / window + 2
    assert all(queues == ["default"] for queues in sent)


def test_the_announcement_leaves_the_pooled_connection_durable(dsn):
    """The announcement commits without waiting for the flush; that setting must end
    with its transaction, or the next push on the connection would not be durable."""
    with psycopg.connect(dsn, autocommit=True) as conn:  # the test server's default may be off
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET synchronous_commit = on")
    app = asyncio.run(_migrated(dsn, max_connections=1))
    with app:
        app.push_sync(Job("tests.noop"))
        app.announcer_sync.close()
        with app.connection_sync() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_a_failed_announcement_is_logged_and_the_next_is_sent(dsn, caplog):
    app = asyncio.run(_migrated(dsn))
    calls: list[list[str]] = []

    def send(queues: list[str]) -> None:
        calls.append(queues)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection")
        app._send_announcement_sync(queues)

    app.announcer_sync = ThreadAnnouncer(send)
    with app, _listening(app, dsn) as listener, caplog.at_level(logging.WARNING, "chancy.queues.announcer"):
        first = app.push_sync(Job("tests.noop"))
        app.announcer_sync.close()
        assert "workers will find them at their next poll" in caplog.text
        assert app.get_job_sync(first).state.value == "pending"  # the job itself is safe
        app.push_sync(Job("tests.noop"))
        assert _heard(listener, 5) == ["default"]


async def test_an_async_push_is_announced_and_close_sends_what_is_due(dsn):
    app = await _migrated(dsn)
    app.announcer = LoopAnnouncer(app._send_announcement, window=30.0)
    with _listening(app, dsn) as listener:
        await app.push(Job("tests.noop"))
        assert await asyncio.to_thread(_heard, listener, 5) == ["default"]
        await app.push(Job("tests.noop", queue="other"))
        assert await asyncio.to_thread(_heard, listener, 0.3) == []
        await app.close()
        assert await asyncio.to_thread(_heard, listener, 5) == ["other"]


async def test_a_push_in_the_callers_transaction_notifies_at_its_commit(dsn):
    app = await _migrated(dsn)
    held: list[list[str]] = []
    app.announcer = LoopAnnouncer(lambda queues: asyncio.sleep(0, held.append(queues)))
    with _listening(app, dsn) as listener:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await app.push_many([Job("tests.noop")], connection=conn)
            assert await asyncio.to_thread(_heard, listener, 0.3) == []
            await conn.commit()
        assert await asyncio.to_thread(_heard, listener, 5) == ["default"]
    assert held == []
    await app.close()


def test_a_process_that_pushes_and_exits_still_announces(dsn):
    app = asyncio.run(_migrated(dsn))
    script = ("import sys; from chancy import Chancy, Job, Queue\n"
              "app = Chancy(sys.argv[1], plugins=[Queue('default')])\n"
              "app.announcer_sync._window = 30.0\n"
              "app.push_sync(Job('tests.noop')); app.push_sync(Job('tests.noop', queue='other'))\n")
    with _listening(app, dsn) as listener:
        subprocess.run([sys.executable, "-c", script, dsn], check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert sorted(n.payload for n in listener.notifies(timeout=5, stop_after=2)) == ["default", "other"]
