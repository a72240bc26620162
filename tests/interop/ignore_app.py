"""The stock Celery app of ``celery_app.py`` plus tasks that end storing no state, as
the Ignore/Reject tests run them (``-A ignore_app``; ``INTEROP_REDIS``: Redis as broker
and backend instead, the reference): each notes its run in ``interop_ran`` (under its
key) first, so a test counts how often it ran."""

from __future__ import annotations

import os

from celery.exceptions import Ignore, Reject

from celery_app import DSN, make_app, record_run

REDIS = os.environ.get("INTEROP_REDIS")
app = make_app(DSN, **({"broker_url": REDIS, "result_backend": REDIS} if REDIS else {}))


def _ran(key: int) -> None:
    record_run(key, f"celery:{os.getpid()}")


@app.task(name="ignore.early")
def ignore_early(key):
    _ran(key)
    raise Ignore()


@app.task(name="ignore.late", acks_late=True)
def ignore_late(key):
    _ran(key)
    raise Ignore()


@app.task(name="ignore.after_progress", bind=True)
def ignore_after_progress(self, key):
    """Stores a state of its own, then ignores: Celery's stores keep that state."""
    _ran(key)
    self.update_state(state="PROGRESS", meta={"step": 1})
    raise Ignore()


@app.task(name="reject.requeue_early")
def reject_requeue_early(key):
    """Acknowledged before it ran, so the requeue has nothing to put back."""
    _ran(key)
    raise Reject("again", requeue=True)


@app.task(name="reject.requeue_late", bind=True, acks_late=True)
def reject_requeue_late(self, key):
    """Put back once, then done on its redelivery."""
    _ran(key)
    if not self.request.delivery_info.get("redelivered"):
        raise Reject("again", requeue=True)
    return key


@app.task(name="reject.drop_early")
def reject_drop_early(key):
    _ran(key)
    raise Reject("no", requeue=False)


@app.task(name="reject.drop_late", acks_late=True)
def reject_drop_late(key):
    _ran(key)
    raise Reject("no", requeue=False)


@app.task(name="replace.elsewhere", bind=True)
def replace_elsewhere(self, queue):
    """Replaced (which ends the task with ``Ignore``) by ``retries.report`` on ``queue``,
    where a Chancy worker runs it."""
    return self.replace(self.app.signature("retries.report", queue=queue))
