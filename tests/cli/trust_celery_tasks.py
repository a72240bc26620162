"""A Celery-style tasks module that never imports its app (``@shared_task``), as in a
Django project: what it sees at run time was set up by the app module, ``trust_celery``."""

import os

from chancy.compat import shared_task

#: Filled by the app module at import and by its ``worker_process_init`` receiver.
SETUP: dict[str, object] = {}


@shared_task
def setup_seen() -> dict[str, object]:
    """The setup this process went through, and which process ran the task."""
    return {"setup": dict(SETUP), "pid": os.getpid()}
