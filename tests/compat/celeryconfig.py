"""A celeryconfig module, as in Celery's first-steps guide."""

import os  # noqa: F401 - modules hold imports too; they are not settings

task_default_queue = "from-module"
task_routes = {"tests.compat.proj.tasks.mul": {"queue": "math"}}
