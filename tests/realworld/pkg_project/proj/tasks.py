"""Tasks found by ``app.autodiscover_tasks(["proj"])``: one under a custom name, one
through ``shared_task``, one with the default ``module.function`` name."""

from chancy.compat import shared_task

from .celery import app


@app.task(name="emails.send")
def send(to):
    return f"sent to {to}"


@shared_task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)
