"""A stock Celery app, unchanged but for its URLs: what `celery worker` subprocesses in
these tests run (``-A celery_app``). Configured from the environment by the tests."""

from __future__ import annotations

import importlib.util
import os
import time

import psycopg
from celery import Celery

import chancy.compat.kombu  # noqa: F401 - registers the ``chancy`` transport alias

DSN = os.environ.get("INTEROP_DSN", "postgresql://localhost/unset")
HAVE_YAML = importlib.util.find_spec("yaml") is not None


def make_app(dsn: str, session_dsn: str | None = None, **conf: object) -> Celery:
    """A stock Celery app on Chancy: broker and result backend URLs are all that changed
    (with ``session_dsn``, ``dsn`` goes through a transaction pooler: docs/poolers.md)."""
    celery = Celery("celery_app", broker="chancy+" + dsn, backend="chancy+" + dsn, set_as_current=False)
    session = {"session_url": session_dsn} if session_dsn else {}
    celery.conf.update(
        result_backend_transport_options=session,
        broker_transport_options={
            **session,
            "polling_interval": 0.2,
            "heartbeat_interval": float(os.environ.get("INTEROP_HEARTBEAT", "0.5")),
            "consumer_timeout": float(os.environ.get("INTEROP_CONSUMER_TIMEOUT", "3")),
            "accept_content": ["json", "pickle"] + (["yaml"] if HAVE_YAML else []),
        },
        task_acks_late=os.environ.get("INTEROP_ACKS_LATE") == "1",
        worker_prefetch_multiplier=int(os.environ.get("INTEROP_PREFETCH", "4")),
        worker_hijack_root_logger=False,
        accept_content=os.environ.get("INTEROP_ACCEPT", "json").split(","),
        **conf,
    )
    celery.task(name="interop.add")(add)
    celery.task(name="interop.fail")(fail)
    celery.task(name="interop.record")(record)
    celery.task(name="interop.retry_twice", bind=True, max_retries=3)(retry_twice)
    celery.task(name="interop.describe", bind=True)(describe)
    celery.task(name="interop.total")(total)
    celery.task(name="interop.kinds")(kinds)
    return celery


_conn: psycopg.Connection | None = None
_conn_pid = 0


def record_run(key: int, worker: str) -> None:
    """Note that job ``key`` ran (and where), in a table the test reads."""
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid():
        _conn = psycopg.connect(DSN, autocommit=True)
        _conn_pid = os.getpid()
    _conn.execute("INSERT INTO interop_ran (key, worker) VALUES (%s, %s)", (key, worker))


def add(a, b):
    return a + b


def kinds(*args):
    return [type(arg).__name__ for arg in args]


def total(numbers):
    return sum(numbers)


def fail(message):
    raise ValueError(message)


def record(key, seconds=0.0):
    if seconds:
        time.sleep(seconds)
    record_run(key, f"celery:{os.getpid()}")
    return key


def retry_twice(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.05)
    return self.request.retries


def describe(self, *args, **kwargs):
    """Echo what the worker received, to check the message built from a row."""
    request = self.request
    return {
        "args": list(args), "kwargs": kwargs, "id": request.id, "retries": request.retries,
        "root_id": request.root_id, "parent_id": request.parent_id, "group": request.group,
        "timelimit": list(request.timelimit or (None, None)), "headers": request.headers,
        "priority": request.delivery_info.get("priority"), "queue": request.delivery_info.get("routing_key"),
        "callbacks": request.callbacks, "chain": request.chain,
    }


# INTEROP_POOLED_DSN: the same database through a transaction pooler.
app = make_app(os.environ["INTEROP_POOLED_DSN"], DSN) if os.environ.get("INTEROP_POOLED_DSN") else make_app(DSN)
