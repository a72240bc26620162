"""What the broker-only tests share: a throwaway Redis server to compare with, the app
of ``broker_only_app.py`` on a given broker and backend, and ``celery`` commands run as
a team would run them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from celery import Celery

HERE = Path(__file__).parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server on 127.0.0.1 and a random port, stopped afterwards: its URL."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed: no Redis reference run")
    port = _free_port()
    process = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def broker_url(kind: str, dsn: str, request: pytest.FixtureRequest) -> str:
    """``chancy``: Chancy's transport on ``dsn``; ``redis``: the Redis reference."""
    return "chancy+" + dsn if kind == "chancy" else request.getfixturevalue("redis_url")


def broker_only_app(dsn: str, broker: str, backend: str) -> Celery:
    """The app the workers run (``-A broker_only_app``), seen from the test's side."""
    from celery_app import make_app

    return make_app(dsn, broker_url=broker, result_backend=backend)


def celery_command(dsn: str, broker: str, backend: str, *args: str, timeout: float = 60) -> str:
    """``celery -A broker_only_app <args>``: its output (exit status checked)."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "broker_only_app", *args], cwd=HERE, capture_output=True, text=True,
        env={**os.environ, "INTEROP_DSN": dsn, "INTEROP_BROKER": broker, "INTEROP_BACKEND": backend},
        timeout=timeout)
    assert done.returncode == 0, f"celery {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_for_ping(app: Celery, timeout: float = 30) -> list[dict]:
    """The workers' answers to ``app.control.ping`` once at least one answers."""
    deadline = time.monotonic() + timeout
    while True:
        replies = app.control.ping(timeout=0.5)
        if replies or time.monotonic() > deadline:
            return replies
