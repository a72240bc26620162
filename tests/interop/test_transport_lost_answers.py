"""Statements of the chancy transport and result backend that committed while their
answer was lost (the connection dropped right after): the retry after reconnecting must
neither lose, duplicate nor strand anything. ``tests/faultproxy.py`` drops the answer."""

from __future__ import annotations

import uuid
from typing import Iterator

import psycopg
import pytest
from faultproxy import FaultProxy
from kombu import Connection, Exchange, Producer
from psycopg.conninfo import conninfo_to_dict

from chancy.compat.protocol import job_id_for

#: Slow heartbeats: the consumer's own heartbeat thread must not be the statement dropped.
QUIET = {"heartbeat_interval": 30, "consumer_timeout": 100}


@pytest.fixture
def proxy(interop_dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_dsn(interop_dsn) as proxy:
        yield proxy


def _url(proxy: FaultProxy, dsn: str) -> str:
    """``chancy+postgresql://…`` to ``dsn``'s database through the proxy."""
    params = conninfo_to_dict(proxy.dsn(dsn))
    password = f":{params['password']}" if params.get("password") else ""
    return f"chancy+postgresql://{params['user']}{password}@127.0.0.1:{params['port']}/{params['dbname']}"


def _rows(dsn: str, task_id: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT state, attempts, args, result, errors FROM chancy_jobs WHERE id = %s",
                            (job_id_for(task_id),)).fetchall()


def _publish(connection: Connection, task_id: str) -> None:
    Producer(connection.default_channel).publish(
        '[[1, 2], {}, {}]', routing_key="celery", exchange=Exchange(""), content_type="application/json",
        content_encoding="utf-8", headers={"task": "interop.add", "id": task_id}, serializer=None)


def test_a_publish_whose_answer_was_lost_is_stored_once(interop_dsn, proxy):
    import chancy.compat.kombu  # noqa: F401 - the transport alias

    task_id = str(uuid.uuid4())
    with Connection(_url(proxy, interop_dsn)) as connection:
        dropped = proxy.drop_reply_after(b"INSERT INTO")
        _publish(connection, task_id)  # neither an error nor TaskIdInUse for its own row
        assert dropped.wait(5)
    assert _rows(interop_dsn, task_id) == [("pending", 0, [1, 2], None, [])]


def test_a_claim_whose_answer_was_lost_is_delivered_again(interop_dsn, proxy):
    import chancy.compat.kombu  # noqa: F401

    task_id = str(uuid.uuid4())
    with Connection("chancy+" + interop_dsn) as producer:
        _publish(producer, task_id)
    with Connection(_url(proxy, interop_dsn), transport_options=QUIET) as consumer:
        channel = consumer.default_channel
        dropped = proxy.drop_reply_after(b"claimed AS")
        assert channel.basic_get("celery") is None  # the claim committed, its answer was lost
        assert dropped.wait(5) and dropped.data_rows == 1
        message = channel.basic_get("celery")
        assert message is not None and message.headers["id"] == task_id
        message.ack()
    assert _rows(interop_dsn, task_id) == [("succeeded", 1, [1, 2], None, [])]


def test_a_result_store_whose_commit_answer_was_lost_is_applied_once(interop_dsn, proxy, celery_app):
    from chancy.compat.backend import ChancyBackend

    task_id = str(uuid.uuid4())
    backend = ChancyBackend(celery_app, url=_url(proxy, interop_dsn))
    try:
        dropped = proxy.drop_reply_after(b"ON CONFLICT (id) DO UPDATE")  # the store, committed alone
        backend.store_result(task_id, ValueError("once"), "FAILURE")
        assert dropped.wait(5)
    finally:
        backend.database.close()
    [(state, _, _, _, errors)] = _rows(interop_dsn, task_id)
    assert state == "failed" and [e["message"] for e in errors] == ["once"]
