"""Tasks for the Celery-fidelity tests (request fields, replace, stamps), shaped like the
tasks of Celery's own integration suite."""

import time

from chancy.compat.app.task import Context
from tests.compat.proj.celery import app

#: Every field Celery's ``Context`` defines, read from ``self.request`` by :func:`request_fields`.
CELERY_CONTEXT_FIELDS = (
    "id", "task", "args", "kwargs", "retries", "is_eager", "called_directly", "eta", "expires", "group",
    "group_index", "chord", "chain", "callbacks", "errbacks", "root_id", "parent_id", "correlation_id",
    "reply_to", "delivery_info", "hostname", "origin", "timelimit", "time_limit", "soft_time_limit",
    "ignore_result", "properties", "headers", "stamps", "stamped_headers", "replaced_task_nesting", "shadow",
    "taskset", "logfile", "loglevel", "utc",
)


@app.task(bind=True)
def request_fields(self, *args, **kwargs):
    """Every Celery request field, plus a custom header read as an attribute (as Celery allows)."""
    request = self.request
    fields = {name: getattr(request, name) for name in CELERY_CONTEXT_FIELDS}
    fields["tenant_attribute"] = getattr(request, "tenant", None)
    fields["children"] = request.children
    fields["is_context"] = isinstance(request, Context)
    return fields


@app.task(bind=True)
def return_properties(self):
    """Celery's integration task of that name."""
    return self.request.properties


@app.task
def identity(x):
    return x


@app.task
def add(x, y):
    return x + y


@app.task
def sleeping(seconds):
    time.sleep(seconds)
    return seconds
