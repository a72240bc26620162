"""Running a benchmark worker in its own process, and waiting for its queue to empty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Mapping, Sequence

import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def background(argv: Sequence[str], stop_timeout: float = 30.0,
                     env: Mapping[str, str] | None = None) -> AsyncIterator[subprocess.Popen]:
    """Run ``python argv…`` from the repository root (with ``env`` added to the
    environment); SIGTERM it (then SIGKILL) on exit. Its output goes to a temporary file,
    shown if it dies early."""
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)})
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.returncode not in (0, -signal.SIGTERM):
                output.seek(0)
                tail = output.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{tail}")


def chancy_worker(dsn: str, executor: str, concurrency: int) -> contextlib.AbstractAsyncContextManager:
    return background(["-m", "benchmarks.worker_proc", dsn, executor, str(concurrency)])


def concurrent_pushes(dsn: str, kind: str, clients: int, per_client: int) -> float:
    """Jobs per second that ``clients`` processes (``benchmarks.pusher``) push one at a
    time, all released at once once each has connected."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.pusher", dsn, kind, str(per_client)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
             for _ in range(clients)]
    try:
        for proc in procs:
            _expect(proc, "ready")
        started = time.perf_counter()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            _expect(proc, "done")
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return clients * per_client / elapsed


def _expect(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline().strip()
    if line != word:
        raise RuntimeError(f"benchmarks.pusher said {line!r} instead of {word!r} (exit code {proc.poll()})")


def rss_mib(proc: subprocess.Popen) -> float:
    return psutil.Process(proc.pid).memory_info().rss / 2**20


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU time of the process and its live children (executor processes)."""
    parent = psutil.Process(proc.pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def wait_until_empty(dsn: str, count_live: str, proc: subprocess.Popen, *,
                           stall_timeout: float = 60.0, interval: float = 0.25) -> None:
    """Poll ``count_live`` (a query returning the number of jobs not finished yet) until
    it is 0. Fails if the worker dies or makes no progress for ``stall_timeout`` seconds.
    The figures come from the database's timestamps, so the polling interval does not
    enter them."""
    last, last_change = None, time.monotonic()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            live = (await (await conn.execute(count_live)).fetchone())[0]
            if live == 0:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.returncode}) with {live} job(s) unfinished")
            if live != last:
                last, last_change = live, time.monotonic()
            elif time.monotonic() - last_change > stall_timeout:
                raise RuntimeError(f"no progress for {stall_timeout:.0f}s with {live} job(s) unfinished")
            await asyncio.sleep(interval)
