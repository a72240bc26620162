"""The smallest Chancy project, written like a Celery one: only the import differs, and
there is no broker to run (Postgres is the broker; without a DSN, an embedded one).

From the repository root, in two terminals::

    chancy worker -A examples.quickstart -P threads   # runs the tasks
    python -m examples.quickstart                     # pushes some, waits for the results

Point both at your own Postgres with ``CHANCY_DSN=postgresql://user:pass@host/db``
(and run ``chancy migrate`` once)."""

from __future__ import annotations

from chancy.compat import Celery

# Named after the module, so that tasks defined when it runs as __main__ get the same
# names as when the worker imports it (as in Celery).
app = Celery("examples.quickstart")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, max_retries=3)
def fetch(self, url: str) -> str:
    """Fails on its first attempt (a pretend timeout), then succeeds: see the retry."""
    if self.request.retries == 0:
        raise self.retry(exc=TimeoutError(f"{url} timed out"), countdown=0.5)
    return f"fetched {url} on attempt {self.request.retries + 1}"


def main() -> None:
    import asyncio

    asyncio.run(app.chancy.migrate())  # idempotent: creates the tables on first use
    results = [add.delay(i, i) for i in range(5)] + [fetch.delay("https://example.com")]
    for result in results:
        print(result.id, "->", result.get(timeout=60))


if __name__ == "__main__":
    main()
