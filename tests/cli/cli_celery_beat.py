"""``cli_celery`` with a beat schedule, as Celery projects write one: a ``beat_schedule``
entry and an ``add_periodic_task`` call made once the app is configured."""

from chancy.compat.schedules import crontab
from cli_celery import app

app.conf.beat_schedule = {
    "nightly": {"task": "cli_celery.add", "schedule": crontab(hour=3, minute=0), "args": (1, 1)},
}


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.add_periodic_task(0.3, sender.signature("cli_celery.add", (20, 22)), name="answer")
