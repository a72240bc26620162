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


@app.task(bind=True)
def record_replaced_task_nesting(self, replacements, nesting=None):
    """Celery's integration task of that name: the nesting level across replacements."""
    nesting = list(nesting or [])
    nesting.append(self.request.replaced_task_nesting)
    if replacements:
        return self.replace(record_replaced_task_nesting.s(replacements - 1, nesting))
    return nesting


@app.task(bind=True)
def add_replaced(self, x, y):
    """Celery's integration task of that name."""
    raise self.replace(add.s(x, y))


@app.task(bind=True)
def replace_with_chain(self, *args):
    """Celery's integration task of that name (without its redis side channel)."""
    from chancy.compat import chain

    return self.replace(chain(identity.s(*args), identity.s()))


@app.task(bind=True)
def replace_with_group(self, x):
    from chancy.compat import group

    return self.replace(group(add.s(x, 1), add.s(x, 2)))


@app.task(bind=True)
def replace_with_failure(self):
    return self.replace(fail.s())


@app.task
def fail():
    raise ValueError("replacement failed")
