"""The demo's app and tasks, written the way a user writes theirs.

Two queues with different executors: ``emails`` (I/O-bound, a thread pool) and
``reports`` (CPU work on the event loop's threads). Some emails fail transiently and are
retried with backoff; some reports have bad input and fail for good after their
attempts. Failures are decided by the arguments, so every run behaves the same.

Run a worker for it yourself with ``chancy worker -A chancy.cli.demo_tasks``."""

from __future__ import annotations

import hashlib
import time

from chancy import Backoff, Chancy, Queue, current_job

app = Chancy(
    plugins=[
        Queue("emails", concurrency=16, executor="thread", polling_interval=0.5),
        Queue("reports", concurrency=4, executor="thread", polling_interval=0.5),
    ],
)

#: One email in this many hits a (simulated) full SMTP relay on its first attempt.
FLAKY_EVERY = 17
#: One account in this many has a ledger that can never be rendered.
BROKEN_EVERY = 50


class RelayBusyError(ConnectionError):
    """The SMTP relay said 421: try again later."""


@app.task(queue="emails", max_attempts=3, backoff=Backoff(base=0.3, maximum=1.0))
def send_email(user_id: int, template: str) -> dict:
    """Render and "send" one email: a few milliseconds of network wait."""
    if user_id % FLAKY_EVERY == 0 and current_job.get().attempts == 1:
        raise RelayBusyError(f"421 relay busy, cannot send {template!r} to user {user_id} now")
    time.sleep(0.002 + (user_id % 5) / 1000)
    return {"user_id": user_id, "template": template, "message_id": f"<{user_id}.{template}@demo>"}


@app.task(queue="reports", max_attempts=2, backoff=Backoff(base=0.2, maximum=0.5))
def render_report(account_id: int, rows: int) -> dict:
    """Aggregate an account's rows: a little real CPU work."""
    if account_id % BROKEN_EVERY == BROKEN_EVERY - 3:
        raise ValueError(f"account {account_id}: ledger row 17 has a negative quantity")
    digest = hashlib.sha256()
    for row in range(rows):
        digest.update(f"{account_id}:{row}".encode())
    return {"account_id": account_id, "rows": rows, "checksum": digest.hexdigest()[:16]}
