"""A Celery-style app for the CLI tests; workers started with ``-A cli_celery`` import it.
Its process-pool children are replaced every 2 tasks (Celery's setting, no CLI flag)."""

import os

from chancy.compat import Celery

app = Celery("cli_celery")
app.conf.worker_max_tasks_per_child = 2


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="cli_celery.renamed")
def pid() -> int:
    """Which process ran the task (to see process-pool children being replaced)."""
    return os.getpid()


@app.task
def explode(message: str) -> None:
    raise RuntimeError(message)
