"""The stock Celery app of ``celery_app.py`` plus a task that ignores its result itself
(``-A ignore_result_app``), for messages that leave ``ignore_result`` to the task."""

from __future__ import annotations

from celery_app import DSN, make_app

app = make_app(DSN)


@app.task(name="interop.add_ignored", ignore_result=True)
def add_ignored(a, b):
    return a + b
