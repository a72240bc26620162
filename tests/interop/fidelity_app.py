"""The stock Celery app of ``celery_app.py`` plus what the transport's fidelity tests
run (``-A fidelity_app``; ``INTEROP_BACKEND``: another result backend than Chancy's):
tasks that replace themselves (``Task.replace()``) as Celery's own integration suite has
them — with a task, a chain, a group, again and again — and tasks that report what the
worker's request holds (``eta``, message ``properties``, ``delivery_info``)."""

from __future__ import annotations

import os
import time

from celery import chain, group
from celery.exceptions import Reject

from celery_app import DSN, make_app, record_run

#: INTEROP_BACKEND: another result backend beside Chancy's broker (a Redis URL …).
app = make_app(DSN, **({"result_backend": os.environ["INTEROP_BACKEND"]} if os.environ.get("INTEROP_BACKEND") else {}))
add = app.tasks["interop.add"]
record = app.tasks["interop.record"]


@app.task(name="replace.identity")
def identity(value):
    return value


@app.task(name="replace.with_add", bind=True)
def with_add(self, x, y):
    return self.replace(add.s(x, y))


@app.task(name="replace.nesting", bind=True)
def nesting(self, replacements, seen=None):
    """Replaced ``replacements`` times; returns the nesting level each run saw, and the
    retries of each run (0: a replacement is not a retry)."""
    seen = [*(seen or []), [self.request.replaced_task_nesting, self.request.retries]]
    if replacements:
        return self.replace(nesting.s(replacements - 1, seen))
    return seen


@app.task(name="replace.with_chain", bind=True)
def with_chain(self, x, y):
    return self.replace(chain(add.s(x, y), identity.s()))


@app.task(name="replace.with_group", bind=True)
def with_group(self, numbers, value):
    return self.replace(group(add.s(n, value) for n in numbers))


@app.task(name="replace.sleep_then_add", bind=True)
def sleep_then_add(self, seconds, x, y):
    """Holds its row running for a while before replacing itself."""
    time.sleep(seconds)
    return self.replace(add.s(x, y))


@app.task(name="replace.total")
def total(numbers):
    return sum(numbers)


@app.task(name="replace.with_slow_chain", bind=True)
def with_slow_chain(self, key, seconds=3.0):
    """Notes its run as ``key``, then is replaced by a chain whose first step (``key + 1``)
    takes ``seconds``: the replaced task waits for the chain's last step meanwhile."""
    record_run(key, f"celery:{os.getpid()}")
    return self.replace(chain(record.si(key + 1, seconds), add.s(1)))


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
