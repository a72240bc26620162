"""A small project using Chancy, as a user's would be: its app and tasks."""

import os

from chancy import Chancy, Queue

#: The pool the worker fixture's queues run jobs in (the outer test runs each).
POOL = os.environ.get("SHOP_POOL", "asyncio")
app = Chancy(plugins=[Queue("default", executor=POOL), Queue("emails", executor=POOL)])
attempts: dict[str, int] = {}


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="emails")
def send_receipt(order: int, to: str) -> str:
    return f"receipt {order} to {to}"


@app.task
def place_order(order: int, items: list[int]) -> None:
    """Pushes one job per item and a receipt: what drain's recursion runs."""
    for item in items:
        add.push_sync(order, item)
    send_receipt.push_sync(order, to="ann@example.com")


@app.task(max_attempts=3)
def flaky(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise ConnectionError(f"try {attempts[key]} failed")
    return "third time lucky"


@app.task
def broken() -> None:
    raise ValueError("the warehouse is on fire")


@app.task
async def double(x: int) -> int:
    return 2 * x
