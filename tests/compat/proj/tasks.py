"""Tasks in the style of Celery's documentation (only the import line differs)."""

import time

from chancy.compat import current_task, shared_task
from chancy.compat.exceptions import Ignore

from tests.compat.proj.celery import app

attempts: dict[str, int] = {}


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task
def fail(message="boom"):
    raise ValueError(message)


@app.task(bind=True)
def whoami(self):
    r = self.request
    return {"id": r.id, "retries": r.retries, "is_eager": r.is_eager, "hostname": r.hostname,
            "root_id": r.root_id, "parent_id": r.parent_id, "headers": r.headers,
            "queue": r.delivery_info.get("routing_key"), "name": self.name, "current": current_task.name}


@app.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, key, succeed_on):
    attempts[key] = attempts.get(key, 0) + 1
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=ConnectionError(f"try {self.request.retries}"), countdown=0)
    return {"retries": self.request.retries, "id": self.request.id}


@app.task(bind=True, max_retries=1)
def always_retry(self):
    raise self.retry(countdown=0)


@app.task(autoretry_for=(KeyError,), retry_backoff=True, retry_backoff_max=0, max_retries=2)
def autoretried(key):
    attempts[key] = attempts.get(key, 0) + 1
    raise KeyError(key)


@app.task(bind=True)
def progress(self, gate_seconds):
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    time.sleep(gate_seconds)
    return "done"


@app.task(bind=True)
def ignored(self):
    raise Ignore()


@app.task
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


@shared_task
def shared_add(x, y):
    return x + y


@app.task(name="custom.named")
def named():
    return "named"


@app.task
def error_handler(request, exc, traceback):
    """The errback of Celery's "Linking (callbacks/errbacks)" docs."""
    return {"failed": request.id, "exc": f"{type(exc).__name__}: {exc}", "has_traceback": "Traceback" in traceback}


@app.task
def log_failure(task_id):
    """An old-style errback: it gets the failed task's id."""
    return f"{task_id} failed"


@app.task(soft_time_limit=0.3, time_limit=10)
def cleans_up_at_soft_limit():
    """The soft-limit pattern of Celery's docs: catch it, clean up, return."""
    from chancy.compat.exceptions import SoftTimeLimitExceeded

    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"
