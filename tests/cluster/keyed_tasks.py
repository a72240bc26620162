"""Tasks for the per-key concurrency tests; their CLI workers start with ``-A keyed_tasks``.
Each run appends ``key start end job-id`` to a log (one short line per write, appended:
atomic across processes), so a test can check that no two runs of one key overlapped."""

import asyncio
import os
import time

from chancy import Chancy, Queue
from chancy.execution import current_job

app = Chancy(plugins=[Queue("default"), Queue("fair", fair_keys=True)])


def _log(log: str, key: str, start: float) -> None:
    line = f"{key} {start!r} {time.time()!r} {current_job.get().id}\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(concurrency_key="key", concurrency=1, max_attempts=3)
def stamp(key: str, log: str, seconds: float) -> None:
    """Holds its key's place ``seconds`` (an argument names the key)."""
    start = time.time()
    time.sleep(seconds)
    _log(log, key, start)


@app.task(concurrency_key=lambda key, log, seconds: f"a-{key}", concurrency=1)
async def astamp(key: str, log: str, seconds: float) -> None:
    """As stamp, for the asyncio pool (a function computes the key)."""
    start = time.time()
    await asyncio.sleep(seconds)
    _log(log, f"a-{key}", start)


@app.task
def plain(log: str) -> None:
    _log(log, "-", time.time())
