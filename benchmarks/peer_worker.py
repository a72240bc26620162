"""A peer's worker in its own process, draining its queue once and exiting:
``python -m benchmarks.peer_worker {procrastinate|pgqueuer} DSN CONCURRENCY``.

Prints one JSON line: jobs run and seconds from the first job's start to the last job's
start. Chancy's figure also counts the writing of the last outcomes; this one does not
(a peer's drain mode may linger before it exits), so the comparison favours the peer."""

from __future__ import annotations

import asyncio
import json
import sys
import time

starts: list[float] = []


def started() -> None:
    starts.append(time.perf_counter())


async def drain_procrastinate(dsn: str, concurrency: int) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        started()

    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)


async def drain_pgqueuer(dsn: str, concurrency: int) -> None:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    manager = QueueManager(Queries(PsycopgDriver(conn)))

    @manager.entrypoint("noop")
    async def noop(job: object) -> None:
        started()

    await manager.run(batch_size=concurrency // 2, max_concurrent_tasks=concurrency,
                      mode=QueueExecutionMode.drain)


if __name__ == "__main__":
    peer, dsn, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    drain = {"procrastinate": drain_procrastinate, "pgqueuer": drain_pgqueuer}[peer]
    asyncio.run(drain(dsn, concurrency))
    print(json.dumps({"jobs": len(starts), "seconds": max(starts) - min(starts) if starts else 0.0}))
