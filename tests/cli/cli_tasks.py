"""Tasks for the CLI tests; workers started with ``-A cli_tasks`` import this module."""

from chancy import Chancy, Queue

app = Chancy(plugins=[Queue("default", concurrency=2), Queue("other")])


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(max_attempts=2)
def explode(message: str) -> None:
    raise RuntimeError(message)


@app.task
def pid() -> int:
    """Which process ran the job (to see process-pool children being replaced)."""
    import os

    return os.getpid()


@app.task
def hold(path: str) -> str:
    """Runs until ``path`` exists: a test holds a job running without sleeping for it."""
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path
