"""A worker process for shutdown tests: ``python worker_main.py DSN SHUTDOWN_TIMEOUT EXECUTOR``."""

import asyncio
import logging
import sys

from chancy import Chancy, Queue, Worker


async def main(dsn: str, shutdown_timeout: float, executor: str) -> None:
    # The shutdown tests push plain functions of core_tasks, by import path.
    app = Chancy(dsn, plugins=[Queue("default", concurrency=1, executor=executor)], allowed_imports=["core_tasks"])
    async with app:
        print("ready", flush=True)
        await Worker(app, shutdown_timeout=shutdown_timeout).start()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
