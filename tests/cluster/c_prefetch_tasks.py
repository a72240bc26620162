"""Tasks for the prefetch tests; their CLI workers start with ``-A c_prefetch_tasks``."""

import os
import time

from chancy import Chancy, Queue
from chancy.execution import current_job

app = Chancy(plugins=[Queue("default")])


@app.task
def hold(path: str) -> str:
    """Runs until ``path`` exists: holds the worker's only slot while others are prefetched."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path


@app.task
def note(log: str) -> None:
    """Appends its job id to ``log``, one line per run: how often each job ran."""
    with open(log, "a") as out:
        out.write(f"{current_job.get().id}\n")
