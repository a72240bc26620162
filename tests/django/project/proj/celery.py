"""A chancy.compat Celery app on the same database, as a project moving off Celery has."""
import os

from chancy.compat import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
