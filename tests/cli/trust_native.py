"""A native app for the task-trust tests (``chancy worker -A trust_native``): one
registered task, and ``os`` in its namespace, as most modules have."""

import os

from chancy import Chancy, Queue

app = Chancy(plugins=[Queue("default", concurrency=1)])


@app.task
def make_dir(path: str) -> str:
    os.mkdir(path)
    return path
