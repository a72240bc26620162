"""Celery's "First steps with Celery" module, with the two changes the migration guide
asks for: the import line, and a Postgres URL as the broker (and result backend), read
from CHANCY_DSN here because the tests make a database per test."""

import os

from chancy.compat import Celery

app = Celery("tasks", broker=os.environ["CHANCY_DSN"], backend=os.environ["CHANCY_DSN"])


@app.task
def add(x, y):
    return x + y


if __name__ == "__main__":
    app.start()
