"""Two Celery projects on one database, as two projects on a laptop share the embedded
server: each has its own main name (so its own schedule namespace), its own queue, a
``tick`` entry by the same name as the other's, and a task only it registers.
``PERIODIC_EMPTY_SCHEDULE=1`` starts a project with its beat_schedule emptied."""

import os

from chancy.compat import Celery
from chancy.compat.schedules import crontab


def make_project(name: str, nightly: bool) -> Celery:
    app = Celery(name)
    app.conf.task_default_queue = name
    entries = {"tick": {"task": f"{name}.tick", "schedule": 1.0}}
    if nightly:
        entries["nightly"] = {"task": f"{name}.tick", "schedule": crontab(minute=0, hour=3)}
    app.conf.beat_schedule = {} if os.environ.get("PERIODIC_EMPTY_SCHEDULE") else entries

    @app.task(name=f"{name}.tick")
    def tick() -> str:
        return name

    return app
