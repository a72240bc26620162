"""The project's Celery app, as Celery's Django guide writes it. ``PROJ_TASK_RUNNER``
picks the implementation, so one project runs both ways: ``chancy`` (the migration
guide's one-line import change) or ``celery`` (stock Celery on Chancy's broker)."""
import os

if os.environ.get("PROJ_TASK_RUNNER", "chancy") == "celery":
    import chancy.compat.kombu  # noqa: F401 - registers the chancy+postgresql:// transport
    from celery import Celery
else:
    from chancy.compat import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
