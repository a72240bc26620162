"""The getting-started app of Celery's docs, with only the import line changed."""

from chancy.compat import Celery

app = Celery("proj", include=["tests.compat.proj.tasks"])
app.conf.update(task_default_queue="default")
