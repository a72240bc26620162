"""One Chancy worker process for the benchmarks:
``python -m benchmarks.worker_proc DSN EXECUTOR CONCURRENCY``; SIGTERM drains and exits."""

from __future__ import annotations

import asyncio
import sys

from benchmarks import tasks
from chancy import Chancy, Queue, Worker


async def serve(dsn: str, executor: str, concurrency: int) -> None:
    async with Chancy(dsn, plugins=[Queue("default", concurrency=concurrency, executor=executor)]) as app:
        for func in (tasks.noop, tasks.noop_sync, tasks.stamp):  # as an app module would
            app.task(func)
        await Worker(app, shutdown_timeout=10.0).start()


if __name__ == "__main__":
    dsn, executor, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    asyncio.run(serve(dsn, executor, concurrency))
