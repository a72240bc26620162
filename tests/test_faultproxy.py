"""The fault proxy of the cluster tests, checked against the real test Postgres: what it
forwards arrives intact, and each fault does what the chaos tests rely on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from faultproxy import FaultProxy, Upstream


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_dsn(dsn) as proxy:
        yield proxy


@pytest.fixture
def table(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE proxied (n int)")
    return "proxied"


def _rows(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM proxied ORDER BY n")]


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread: its result, or the exception it raised, lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # noqa: BLE001 - handed to the test to assert on
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_upstream_is_the_unix_socket_or_host_and_port_of_the_dsn() -> None:
    assert Upstream.from_dsn("postgresql://u@/db?host=/tmp/x&port=5433") == Upstream("/tmp/x", 5433)
    assert Upstream.from_dsn("host=db.example port=6000 dbname=x") == Upstream("db.example", 6000)
    assert Upstream.from_dsn("postgresql://u@localhost/db") == Upstream("localhost", 5432)


def test_forwards_statements_and_large_results_intact(dsn: str, proxy: FaultProxy) -> None:
    assert "127.0.0.1" in proxy.dsn(dsn)
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        assert proxy.open_connections == 1
        total = conn.execute("SELECT sum(n) FROM generate_series(1, 1000) n").fetchone()
        rows = conn.execute("SELECT repeat('x', 1000) FROM generate_series(1, 500)").fetchall()
        for _ in range(8):  # past psycopg's prepare threshold: Parse once, then Binds by name
            assert conn.execute("SELECT %s::int + 1", (1,)).fetchone() == (2,)
    assert total == (500500,)
    assert rows == [("x" * 1000,)] * 500
    assert proxy.accepted_connections == 1


def test_cut_breaks_open_connections_and_new_ones_work(dsn: str, proxy: FaultProxy) -> None:
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        conn.execute("SELECT 1")
        proxy.cut()
        assert proxy.open_connections == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_blackhole_hangs_queries_and_connects_until_restored(dsn: str, proxy: FaultProxy) -> None:
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        proxy.blackhole()
        query, answer = _in_thread(lambda: conn.execute("SELECT 42").fetchone())
        query.join(1.0)
        assert query.is_alive() and answer == []
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn(dsn), connect_timeout=2)
        proxy.restore()
        query.join(5.0)
        assert answer == [(42,)]  # the partition healed: the held query went through
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_drop_reply_after_commits_the_statement_but_the_client_sees_an_error(
        dsn: str, proxy: FaultProxy, table: str) -> None:
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        dropped = proxy.drop_reply_after(b"INSERT INTO proxied")
        conn.execute("SELECT 1")  # not the armed statement: answered
        with pytest.raises(psycopg.OperationalError):
            conn.execute("INSERT INTO proxied VALUES (1), (2) RETURNING n")
    assert dropped.wait(0) and dropped.data_rows == 2
    assert _rows(dsn) == [1, 2]
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:  # one-shot: disarmed now
        conn.execute("INSERT INTO proxied VALUES (3)")
    assert _rows(dsn) == [1, 2, 3]


def test_drop_reply_after_matches_a_prepared_statement_run_by_name(
        dsn: str, proxy: FaultProxy, table: str) -> None:
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        conn.execute("INSERT INTO proxied VALUES (%s)", (1,), prepare=True)  # the text is sent here only
        dropped = proxy.drop_reply_after(b"INSERT INTO proxied")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("INSERT INTO proxied VALUES (%s)", (2,), prepare=True)
    assert dropped.wait(0)
    assert _rows(dsn) == [1, 2]


def test_drop_reply_after_then_hang_leaves_the_client_waiting(
        dsn: str, proxy: FaultProxy, table: str) -> None:
    with psycopg.connect(proxy.dsn(dsn), autocommit=True) as conn:
        dropped = proxy.drop_reply_after(b"INSERT INTO proxied", then="hang")
        insert, outcome = _in_thread(lambda: conn.execute("INSERT INTO proxied VALUES (1)"))
        assert dropped.wait(5)
        assert _rows(dsn) == [1]
        insert.join(0.5)
        assert insert.is_alive()
        proxy.cut()
        insert.join(5)
        assert isinstance(outcome[0], psycopg.OperationalError)
