"""Peers (procrastinate, pgqueuer) on the same server, with the same workloads as Chancy:
enqueue one at a time (async), enqueue in bulk, drain no-op jobs with one worker process at
concurrency 100. Each is measured only when installed; neither is a dependency of Chancy."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable

import psycopg

from benchmarks.drain import ASYNC_CONCURRENCY, drain_key
from benchmarks.harness import FigureSpec, Run, rate
from benchmarks.process import REPO


def _specs(peer: str, run: Run) -> dict[str, FigureSpec]:
    return {
        f"{peer}.push_async": FigureSpec(f"{peer}: enqueue one at a time (async)", "jobs/s"),
        f"{peer}.push_bulk": FigureSpec(f"{peer}: enqueue in bulk (one call)", "jobs/s"),
        f"{peer}.drain": FigureSpec(f"{peer}: drain {run.sizes.peer_drain:,} no-op, x{ASYNC_CONCURRENCY}", "jobs/s"),
    }


class Procrastinate:
    name = "procrastinate"

    def __init__(self, dsn: str) -> None:
        import procrastinate

        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

        @self.app.task(name="noop")
        async def noop() -> None:
            pass

        self.noop = noop

    async def __aenter__(self) -> "Procrastinate":
        self._context = self.app.open_async()
        await self._context.__aenter__()
        await self.app.schema_manager.apply_schema_async()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._context.__aexit__(*exc)

    async def push_one(self) -> None:
        await self.noop.defer_async()

    async def push_bulk(self, count: int) -> None:
        await self.noop.batch_defer_async(*({} for _ in range(count)))


class PgQueuer:
    name = "pgqueuer"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def __aenter__(self) -> "PgQueuer":
        from pgqueuer import PsycopgDriver, Queries

        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        self.queries = Queries(PsycopgDriver(self.conn))
        await self.queries.install()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.conn.close()

    async def push_one(self) -> None:
        await self.queries.enqueue("noop", None)

    async def push_bulk(self, count: int) -> None:
        await self.queries.enqueue(["noop"] * count, [None] * count, [0] * count)


PEERS: dict[str, Callable[[str], Any]] = {"procrastinate": Procrastinate, "pgqueuer": PgQueuer}


def installed() -> list[str]:
    return [name for name in PEERS if importlib.util.find_spec(name) is not None]


def _drain_in_process(peer: str, dsn: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.peer_worker", peer, dsn, str(ASYNC_CONCURRENCY)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{peer} worker exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenario(peer: str) -> Callable[[Run], Awaitable[dict[str, float]]]:
    async def measure_peer(run: Run) -> dict[str, float]:
        n_one, n_bulk, n_drain = run.sizes.insert_loop, run.sizes.bulk, run.sizes.peer_drain
        async with run.fresh_database() as dsn:
            async with PEERS[peer](dsn) as client:
                await client.push_one()
                started = time.perf_counter()
                for _ in range(n_one):
                    await client.push_one()
                one = rate(n_one, time.perf_counter() - started)
                started = time.perf_counter()
                await client.push_bulk(n_bulk)
                bulk = rate(n_bulk, time.perf_counter() - started)
        async with run.fresh_database() as dsn:
            async with PEERS[peer](dsn) as client:
                for start in range(0, n_drain, 10_000):
                    await client.push_bulk(min(10_000, n_drain - start))
            drained = _drain_in_process(peer, dsn)
        if drained["jobs"] != n_drain:
            raise AssertionError(f"{peer} ran {drained['jobs']} of {n_drain} jobs")
        return {f"{peer}.push_async": one, f"{peer}.push_bulk": bulk,
                f"{peer}.drain": rate(n_drain, drained["seconds"])}

    return measure_peer


async def measure(run: Run) -> None:
    peers = installed()
    if not peers:
        run.notes.append("peers: neither procrastinate nor pgqueuer is installed; no peer figures")
        return
    chancy_drain = drain_key("asyncio", run.sizes.drain[0])
    for peer in peers:
        run.log(f"peer: {peer}")
        await run.measure(_specs(peer, run), scenario(peer))
        run.ratio(f"chancy drain / {peer} drain", chancy_drain, f"{peer}.drain", at_least=2.0)
        run.ratio(f"chancy push / {peer} enqueue (async, one at a time)", "chancy.push_async", f"{peer}.push_async")
        run.ratio(f"chancy push_many / {peer} bulk enqueue", "chancy.push_many", f"{peer}.push_bulk")
