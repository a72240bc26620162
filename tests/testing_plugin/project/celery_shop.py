"""The same kind of project written against Chancy's Celery-compatible layer."""

from chancy.compat import Celery

app = Celery("celery_shop")


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def chained(x: int) -> int:
    mul.delay(x, 10)
    return x
