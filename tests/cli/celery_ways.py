"""A Celery-style app for the tests of the worker run Celery's ways (``-A`` before the
command, Ctrl-C, print() in tasks). ``CELERY_WAYS_REDIRECT=0`` in the worker's
environment turns ``worker_redirect_stdouts`` off."""

import os
import sys
import time

from chancy.compat import Celery

app = Celery("celery_ways")
app.conf.worker_redirect_stdouts = os.environ.get("CELERY_WAYS_REDIRECT", "1") == "1"


@app.task
def shout_then_sleep(marker: str, seconds: float) -> str:
    """Print ``marker`` on stdout and stderr, then run for ``seconds`` (a long task)."""
    print(marker)
    print(f"{marker} on stderr", file=sys.stderr)
    time.sleep(seconds)
    return marker
