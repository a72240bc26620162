"""The Celery app every Celery-shaped drain runs (``celery -A benchmarks.celery_app worker``
and ``chancy worker -A benchmarks.celery_app``): one synchronous no-op task whose result is
stored, as a team moving off Celery has it.

Chosen by the environment the benchmark sets for the worker:
``CHANCY_BENCH_CELERY`` ``stock`` (``celery.Celery``) or ``compat`` (``chancy.compat.Celery``),
``CHANCY_BENCH_BROKER`` and ``CHANCY_BENCH_BACKEND`` (URLs), and ``CHANCY_BENCH_RUN_LOG``:
a directory where each process appends ``<argument> <start time>`` per run, which proves
every task ran exactly once and gives the first start, whatever the broker."""

from __future__ import annotations

import os
import time

TASK = "benchmarks.celery_app.noop"


def _celery_class() -> type:
    if os.environ.get("CHANCY_BENCH_CELERY", "compat") == "stock":
        import chancy.compat.kombu  # noqa: F401 - registers the chancy+postgresql:// transport
        from celery import Celery
    else:
        from chancy.compat import Celery
    return Celery


class RunLog:
    """Appends one line per run to ``<directory>/<pid>.log`` with one unbuffered
    ``write`` (a couple of microseconds: nothing beside a queue's cost per task). Opened
    again in a forked child, which must not share its parent's file."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.fd: int | None = None
        self.pid = 0

    def write(self, argument: object) -> None:
        if self.directory is None:
            return
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.fd = os.open(os.path.join(self.directory, f"{self.pid}.log"),
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self.fd, f"{argument} {time.time():.6f}\n".encode())  # type: ignore[arg-type]


run_log = RunLog(os.environ.get("CHANCY_BENCH_RUN_LOG"))
app = _celery_class()("benchmarks", broker=os.environ.get("CHANCY_BENCH_BROKER"),
                      backend=os.environ.get("CHANCY_BENCH_BACKEND"))
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name=TASK)
def noop(i: int) -> None:
    """Does nothing but note that it ran; its (empty) result is stored."""
    run_log.write(i)


def read_run_log(directory: str) -> list[tuple[int, float]]:
    """Every ``(argument, start time)`` the worker's processes wrote."""
    runs = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as lines:
            runs += [(int(argument), float(started)) for argument, started in map(str.split, lines)]
    return runs
