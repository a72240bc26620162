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
