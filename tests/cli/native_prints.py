"""A native app whose task prints, then runs on (``chancy worker -A native_prints``)."""

import time

from chancy import Chancy, Queue

app = Chancy(plugins=[Queue("default", concurrency=1)])


@app.task
def print_then_sleep(marker: str, seconds: float) -> None:
    print(marker)
    time.sleep(seconds)
