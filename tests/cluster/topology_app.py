"""The app of the many-hosts tests (``chancy worker -A topology_app``): a queue every host
serves, one queue per worker host (so a test can give a job to one host), and leader
chores on short intervals so that a lost host is noticed within seconds."""

import time

from chancy import Chancy, Queue
from chancy.plugins.leadership import Leadership
from chancy.plugins.recovery import Recovery

HOSTS = ("worker-1", "worker-2", "worker-3")

app = Chancy(plugins=[Queue("default", concurrency=4, executor="thread", polling_interval=0.5),
                      *(Queue(name, concurrency=2, executor="thread", polling_interval=0.5) for name in HOSTS),
                      Leadership(interval=0.5), Recovery(interval=0.5)])


@app.task
def visit(n: int, seconds: float = 0.4) -> int:
    """A job that takes a while, so that a host cut off is cut off mid-job."""
    time.sleep(seconds)
    return n
