"""Fixtures for running real Celery against Chancy's tables: a migrated database, a
``interop_ran`` table that tasks write to, and ``celery worker`` subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from chancy import Chancy
from chancy.queues.pg import Queue

HERE = Path(__file__).parent


@pytest.fixture
async def interop_dsn(dsn: str) -> str:
    """A migrated Chancy database with the ``interop_ran`` bookkeeping table."""
    app = Chancy(dsn, plugins=[Queue("celery")])
    await app.migrate()
    await app.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE interop_ran (key integer NOT NULL, worker text NOT NULL)")
    return dsn


@pytest.fixture
def celery_app(interop_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A stock Celery app (as in ``celery_app.py``) on this test's database."""
    monkeypatch.syspath_prepend(str(HERE))
    import celery_app as module

    monkeypatch.setattr(module, "DSN", interop_dsn)
    app = module.make_app(interop_dsn)
    yield app
    app.close()


class CeleryWorker:
    """A ``celery worker`` subprocess on this test's database."""

    def __init__(self, dsn: str, pool: str, concurrency: int, queues: str, env: dict[str, str],
                 app: str = "celery_app", args: tuple[str, ...] = ()) -> None:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"celery-worker-{os.getpid()}-{id(self)}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency),
             "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info",
             "-n", f"w{id(self)}@%h", *args],
            cwd=HERE, env={**os.environ, "INTEROP_DSN": dsn, **env}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """``kill -9`` the worker and its pool children, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # cold shutdown: the test is over
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        print(f"--- celery worker {self.process.pid} log ---\n{self.log()}")  # shown if the test failed
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def celery_worker(interop_dsn: str) -> Iterator:
    """Start stock ``celery worker`` subprocesses: ``celery_worker(pool="solo", ...)``
    (``app``: the ``-A`` module; ``args``: more command-line options)."""
    workers: list[CeleryWorker] = []

    def start(pool: str = "solo", concurrency: int = 1, queues: str = "celery", app: str = "celery_app",
              args: tuple[str, ...] = (), **env: str) -> CeleryWorker:
        worker = CeleryWorker(interop_dsn, pool, concurrency, queues, env, app, args)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()

