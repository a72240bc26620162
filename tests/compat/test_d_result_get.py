"""``AsyncResult.get()`` of a finished task reads the row once on the statement pool; only
an unfinished task waits on a LISTEN session (issue 27: < 1 ms for a finished task)."""

from __future__ import annotations

import pytest

from chancy.compat import Celery
from chancy.compat.exceptions import TimeoutError as CeleryTimeoutError
from chancy.errors import DatabaseUnavailableError

#: Where no Postgres listens: a session needed here fails at once.
UNREACHABLE_SESSION = "postgresql://someone:secret@127.0.0.1:1/nowhere"


@pytest.fixture
def client(dsn):
    """A web process's app whose LISTEN sessions cannot be had (its session_url points
    nowhere), so any get() that waits on one fails."""
    app = Celery("client", broker=dsn, set_as_current=False,
                 broker_transport_options={"session_url": UNREACHABLE_SESSION})
    yield app
    app.close()


def test_get_of_a_finished_task_needs_no_listen_session(celery_app, worker, client):
    from tests.compat.proj.tasks import add

    sent = add.delay(2, 3)
    assert sent.get(timeout=30) == 5  # the worker's app waits the ordinary way
    finished = client.AsyncResult(sent.id)
    assert finished.get(timeout=5) == 5
    assert finished.state == "SUCCESS"
    assert client.AsyncResult(sent.id).get(timeout=5, propagate=False) == 5


def test_get_of_an_unfinished_task_still_waits_on_a_session(celery_app, client):
    from tests.compat.proj.tasks import add

    pending = add.delay(1, 1)  # no worker: it stays pending
    with pytest.raises((DatabaseUnavailableError, CeleryTimeoutError)) as caught:
        client.AsyncResult(pending.id).get(timeout=3)
    assert "secret" not in str(caught.value)
