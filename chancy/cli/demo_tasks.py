"""The demo's app and tasks, written the way a Celery user writes theirs — only the
import differs (``from chancy.compat import Celery``) and there is no broker to run.

Two queues: ``emails`` (I/O-bound) and ``reports`` (CPU work). Some emails meet a busy
relay and retry with ``self.retry``; some reports have bad input and fail for good once
their retry is spent. Failures are decided by the arguments, so every run behaves the same.

Run a worker for it yourself with ``chancy worker -A chancy.cli.demo_tasks -P threads``."""

from __future__ import annotations

import hashlib
import time

from chancy.compat import Celery

app = Celery("chancy_demo")
app.conf.task_queues = ("emails", "reports")
app.conf.task_default_queue = "emails"

#: One email in this many hits a (simulated) busy SMTP relay on its first attempt.
FLAKY_EVERY = 17
#: One account in this many has a ledger that can never be rendered.
BROKEN_EVERY = 50


class RelayBusyError(ConnectionError):
    """The SMTP relay said 421: try again later."""


@app.task(bind=True, queue="emails", max_retries=2)
def send_email(self, user_id: int, template: str) -> dict:
    """Render and "send" one email: a few milliseconds of network wait."""
    if user_id % FLAKY_EVERY == 0 and self.request.retries == 0:
        busy = RelayBusyError(f"421 relay busy, cannot send {template!r} to user {user_id} now")
        raise self.retry(exc=busy, countdown=0.3)
    time.sleep(0.002 + (user_id % 5) / 1000)
    return {"user_id": user_id, "template": template, "message_id": f"<{user_id}.{template}@demo>"}


@app.task(queue="reports", autoretry_for=(ValueError,), max_retries=1, default_retry_delay=0.2)
def render_report(account_id: int, rows: int) -> dict:
    """Aggregate an account's rows: a little real CPU work."""
    if account_id % BROKEN_EVERY == BROKEN_EVERY - 3:
        raise ValueError(f"account {account_id}: ledger row 17 has a negative quantity")
    digest = hashlib.sha256()
    for row in range(rows):
        digest.update(f"{account_id}:{row}".encode())
    return {"account_id": account_id, "rows": rows, "checksum": digest.hexdigest()[:16]}
