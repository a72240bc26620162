"""A Celery-style app (``chancy worker -A trust_celery``) whose module does setup at
import (sets state another module reads, connects a signal receiver) and registers a
task under a custom name."""

import os

import trust_celery_tasks
from chancy.compat import Celery, signals

app = Celery("trust_celery")
trust_celery_tasks.SETUP["configured_by"] = "trust_celery"


@signals.worker_process_init.connect
def _process_init(**_: object) -> None:
    trust_celery_tasks.SETUP["process_init_pid"] = os.getpid()


@app.task(name="emails.send")
def send(to: str) -> str:
    return f"sent to {to}"
