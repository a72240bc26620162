"""The stock Celery app of ``celery_app.py`` plus tasks that report what the worker's
request holds: ``eta``, message ``properties``, ``delivery_info`` (``-A request_app``)."""

from __future__ import annotations

import time

from celery.exceptions import Reject

from celery_app import DSN, make_app

app = make_app(DSN)


@app.task(name="request.eta", bind=True)
def eta(self):
    return self.request.eta


@app.task(name="request.properties", bind=True)
def properties(self):
    return self.request.properties


@app.task(name="request.requeued_once", bind=True, acks_late=True)
def requeued_once(self):
    """Rejected with requeue on its first delivery; returns ``redelivered`` of each."""
    if not self.request.delivery_info.get("redelivered"):
        raise Reject("once more", requeue=True)
    return self.request.delivery_info["redelivered"]


@app.task(name="request.redelivered", bind=True)
def redelivered(self):
    return self.request.delivery_info.get("redelivered")


@app.task(name="request.slow_unless_redelivered", bind=True)
def slow_unless_redelivered(self, seconds):
    """Takes ``seconds`` on a first delivery (time to kill its worker); returns
    ``redelivered`` at once on a later one."""
    if not self.request.delivery_info.get("redelivered"):
        time.sleep(seconds)
    return self.request.delivery_info["redelivered"]
