"""A celeryconfig module, as in Celery's first-steps guide."""

import os  # noqa: F401 - modules hold imports too; they are not settings

task_default_queue = "from-module"
task_routes = {"tests.compat.proj.tasks.mul": {"queue": "math"}}


class DjangoSettings:
    """What ``django.conf:settings`` looks like to ``config_from_object``."""

    DEBUG = False
    CELERY_BROKER_URL = "postgres://app@db/app"
    CELERY_TASK_DEFAULT_QUEUE = "django-queue"
    CELERY_BEAT_SCHEDULE = {"tick": {"task": "tests.compat.proj.tasks.add", "schedule": 60.0, "args": (1, 1)}}
