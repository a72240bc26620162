"""Celery-shaped work, Celery as the peer: draining already-queued synchronous no-op tasks
with results stored (``benchmarks.celery_app``), in the same run:

- stock Celery 5, Redis broker + Redis result backend: ``celery worker -P prefork -c
  <cores>`` and ``-P threads -c 8`` (only when ``redis-server`` is installed);
- stock Celery prefork on Chancy's broker and backend (``chancy+postgresql://``);
- ``chancy worker -P process -c <cores>`` and ``-P thread -c 8`` on the same app.

Each drain: the worker starts on an empty queue and runs one warm-up task; its processes
are stopped (SIGSTOP) while all tasks are queued and continued (SIGCONT) together, so
every task is queued before the first one starts and the worker's start-up is neither in
the clock nor in its CPU. Rate = tasks / (first start, written by the task itself, → last
result stored, from the result backend). Every task is checked to have run exactly once
and succeeded. The worker's CPU µs per task covers the worker and its pool children
(``psutil``). Also ``AsyncResult.get()`` on a finished task through ``chancy.compat``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import psutil
import psycopg

from benchmarks.celery_app import TASK, read_run_log
from benchmarks.harness import FigureSpec, Run, rate
from benchmarks.process import background, cpu_seconds
from chancy.compat.job_rows import job_for

CORES = os.cpu_count() or 1
THREADS = 8
STALL_TIMEOUT = 60.0
REDIS_MISSING = ("redis-server is not installed, so the Celery + Redis peers were skipped "
                 "(Debian/Ubuntu: sudo apt-get install redis-server)")


@dataclasses.dataclass(frozen=True)
class Peer:
    key: str
    label: str
    worker: str  # "celery" (stock) or "chancy"
    pool: str
    concurrency: int
    broker: str  # "redis" or "chancy"


PEERS = (
    Peer("celery.prefork_redis", f"Celery prefork x{CORES} on Redis", "celery", "prefork", CORES, "redis"),
    Peer("celery.threads_redis", f"Celery threads x{THREADS} on Redis", "celery", "threads", THREADS, "redis"),
    Peer("celery.prefork_chancy", f"Celery prefork x{CORES} on Chancy's broker", "celery", "prefork", CORES,
         "chancy"),
    Peer("chancy.sync_process", f"chancy worker -P process -c {CORES}", "chancy", "process", CORES, "chancy"),
    Peer("chancy.sync_thread", f"chancy worker -P thread -c {THREADS}", "chancy", "thread", THREADS, "chancy"),
)
RESULT_GET = "compat.result_get_finished"


def _specs(run: Run) -> dict[str, FigureSpec]:
    n = run.sizes.celery_drain
    specs = {}
    for peer in PEERS:
        specs[peer.key] = FigureSpec(f"{peer.label}: drain {n:,} sync no-op", "jobs/s")
        specs[peer.key + "_cpu"] = FigureSpec(f"{peer.label}: worker CPU", "us/job", higher_is_better=False)
    specs[RESULT_GET] = FigureSpec("chancy.compat: AsyncResult.get() of a finished task", "ms", higher_is_better=False)
    return specs


# --- Redis ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` without persistence; yields its URL."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", directory],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import redis

            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start (exit code {proc.poll()})") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


# --- one drain ----------------------------------------------------------------------------------
def _worker_argv(peer: Peer) -> list[str]:
    if peer.worker == "celery":
        return ["-m", "celery", "-A", "benchmarks.celery_app", "worker", "-P", peer.pool, "-c",
                str(peer.concurrency), "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return ["-c", "from chancy.cli import main; main()", "worker", "-A", "benchmarks.celery_app", "-P", peer.pool,
            "-c", str(peer.concurrency), "-l", "warning"]


def _urls(peer: Peer, dsn: str, redis_url: str | None) -> tuple[str, str | None]:
    """Broker and result backend of the worker (a Chancy worker's are its DSN)."""
    if peer.broker == "redis":
        assert redis_url is not None
        return redis_url, redis_url
    if peer.worker == "celery":
        url = "chancy+" + dsn
        return url, url
    return dsn, None


def _client(peer: Peer, broker: str, backend: str | None) -> Any:
    """The producer side: a stock Celery app for stock workers, ``chancy.compat`` for
    Chancy's (the app a migrated project pushes with)."""
    if peer.worker == "celery":
        import chancy.compat.kombu  # noqa: F401 - registers the chancy+postgresql:// transport
        from celery import Celery
    else:
        from chancy.compat import Celery
    client = Celery("benchmarks-client", broker=broker, backend=backend, set_as_current=False)
    return client


def _process_tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def _enqueue(peer: Peer, client: Any, count: int) -> list[str]:
    """Queue ``count`` tasks; the ids, in order."""
    if peer.worker == "chancy":  # one bulk push, as drain.py queues Chancy's own drains
        sigs = [client.signature(TASK, args=(i,)) for i in range(count)]
        jobs = [job_for(client, sig) for sig in sigs]
        client.chancy.push_many_sync(jobs)
        return [str(job.id) for job in jobs]
    return [client.send_task(TASK, args=(i,)).id for i in range(count)]


def _done_at(meta: dict[str, Any]) -> datetime:
    done = meta["date_done"]
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    return done if done.tzinfo else done.replace(tzinfo=timezone.utc)


def _last_result_stored(peer: Peer, client: Any, dsn: str, ids: list[str]) -> float:
    """When the last result was stored (epoch seconds), once every task succeeded."""
    if peer.worker == "chancy":
        with psycopg.connect(dsn) as conn:
            total, clean, last = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1), max(completed_at)"
                " FROM chancy_jobs WHERE func = %s AND args <> '[-1]'::jsonb", (TASK,)).fetchone()
        if total != len(ids) or clean != len(ids):
            raise AssertionError(f"{peer.label}: {total} rows, {clean} succeeded at their first attempt "
                                 f"of {len(ids)}")
        return last.timestamp()
    metas = [client.backend.get_task_meta(task_id) for task_id in ids]
    failed = [meta for meta in metas if meta["status"] != "SUCCESS"]
    if failed:
        raise AssertionError(f"{peer.label}: {len(failed)} of {len(ids)} tasks did not succeed, e.g. {failed[0]}")
    return max(_done_at(meta) for meta in metas).timestamp()


def _wait_for_runs(proc: subprocess.Popen, run_log: str, count: int) -> list[tuple[int, float]]:
    """Poll the run log until ``count`` tasks ran; fail when the worker dies or stalls."""
    last, last_change = -1, time.monotonic()
    while True:
        runs = read_run_log(run_log)
        if len(runs) >= count:
            return runs
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) after {len(runs)} of {count} tasks")
        if len(runs) != last:
            last, last_change = len(runs), time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT:
            raise RuntimeError(f"no progress for {STALL_TIMEOUT:.0f}s after {len(runs)} of {count} tasks")
        time.sleep(0.1)


def _wait_for_results(peer: Peer, client: Any, dsn: str, ids: list[str]) -> float:
    """The last task ran; its result may be a moment behind."""
    deadline = time.monotonic() + STALL_TIMEOUT
    while True:
        try:
            return _last_result_stored(peer, client, dsn, ids)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _result_get_ms(client: Any, ids: list[str], samples: int = 200) -> float:
    """Mean milliseconds of ``AsyncResult(id).get()`` on finished tasks (a fresh handle
    each time, as a web request that was given the id has)."""
    chosen = ids[:: max(1, len(ids) // samples)][:samples]
    client.AsyncResult(chosen[0]).get(timeout=10)  # the pool is open, as in a running app
    started = time.perf_counter()
    for task_id in chosen:
        client.AsyncResult(task_id).get(timeout=10)
    return (time.perf_counter() - started) / len(chosen) * 1e3


async def drain(run: Run, peer: Peer, redis_url: str | None) -> dict[str, float]:
    count = run.sizes.celery_drain
    async with run.fresh_database() as dsn:
        if peer.broker == "chancy":
            from chancy import Chancy

            async with Chancy(dsn) as app:
                await app.migrate()
        elif redis_url is not None:
            import redis

            redis.Redis.from_url(redis_url).flushall()
        broker, backend = _urls(peer, dsn, redis_url)
        with tempfile.TemporaryDirectory() as run_log:
            env = {"CHANCY_BENCH_CELERY": "stock" if peer.worker == "celery" else "compat",
                   "CHANCY_BENCH_BROKER": broker, "CHANCY_BENCH_BACKEND": backend or "",
                   "CHANCY_BENCH_RUN_LOG": run_log}
            client = _client(peer, broker, backend)
            try:
                async with background(_worker_argv(peer), env=env) as proc:
                    figures = await asyncio.to_thread(_timed_drain, peer, proc, client, dsn, run_log, count)
            finally:
                client.close()
    return figures


def _timed_drain(peer: Peer, proc: subprocess.Popen, client: Any, dsn: str, run_log: str,
                 count: int) -> dict[str, float]:
    client.send_task(TASK, args=(-1,))  # warm-up: the worker is up and consuming
    _wait_for_runs(proc, run_log, 1)
    cpu_before = cpu_seconds(proc)
    stopped = _process_tree(proc.pid)
    _signal_all(stopped, signal.SIGSTOP)
    try:
        ids = _enqueue(peer, client, count)
    finally:
        _signal_all(list(reversed(stopped)), signal.SIGCONT)
    runs = [entry for entry in _wait_for_runs(proc, run_log, count + 1) if entry[0] >= 0]
    last_stored = _wait_for_results(peer, client, dsn, ids)
    cpu = cpu_seconds(proc) - cpu_before
    arguments = sorted(argument for argument, _ in runs)
    if arguments != list(range(count)):
        twice = len(arguments) - len(set(arguments))
        raise AssertionError(f"{peer.label}: {len(arguments)} runs of {count} tasks ({twice} ran more than once)")
    first_start = min(started for _, started in runs)
    figures = {peer.key: rate(count, last_stored - first_start), peer.key + "_cpu": cpu / count * 1e6}
    if peer.worker == "chancy" and peer.pool == "process":
        figures[RESULT_GET] = _result_get_ms(client, ids)
    return figures


async def measure(run: Run) -> None:
    run.log("Celery-shaped drains: Celery and chancy workers")
    redis_installed = shutil.which("redis-server") is not None
    peers = [peer for peer in PEERS if redis_installed or peer.broker != "redis"]
    if not redis_installed:
        run.notes.append(REDIS_MISSING)
        run.log("  " + REDIS_MISSING)
    specs = _specs(run)
    with redis_server() if redis_installed else contextlib.nullcontext() as redis_url:
        async def all_peers(run: Run) -> dict[str, float]:
            """Each repetition drains with every peer, one after the other, so a ratio
            compares drains of the same minutes."""
            figures: dict[str, float] = {}
            for peer in peers:
                figures |= await drain(run, peer, redis_url)
            return figures

        await run.measure(specs, all_peers)
    run.ratio("chancy process / Celery prefork (Redis)", "chancy.sync_process", "celery.prefork_redis", at_least=5.0)
    run.ratio("chancy thread / Celery threads (Redis)", "chancy.sync_thread", "celery.threads_redis", at_least=10.0)
    run.ratio("Celery prefork on Chancy's broker + backend / on Redis", "celery.prefork_chancy",
              "celery.prefork_redis", at_least=1.0)
    run.ratio("chancy process / Celery prefork on Chancy's broker + backend", "chancy.sync_process",
              "celery.prefork_chancy")
    for peer in PEERS:
        if peer.worker == "chancy":
            run.limit(peer.key + "_cpu", 100.0)
    run.limit(RESULT_GET, 1.0)
