"""Plain unit tests, no database: an app's completion hooks (registered on the app, not
the process) and the one backoff every retry uses."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone

import pytest

from chancy import Backoff, Chancy, JobState
from chancy.compat.app.task import exponential_backoff
from chancy.hooks import installed_hooks
from chancy.job import DEFAULT_BACKOFF, Jitter, JobRecord, backoff_delay
from chancy.queue import Transition
from chancy.store.pg.statements import Statement


def _record(attempts: int = 1, backoff: Backoff | None = None) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=uuid.uuid4(), queue="default", func="t", args=(), kwargs={}, priority=0,
                     state=JobState.RUNNING, attempts=attempts, max_attempts=5, scheduled_at=now, expires_at=None,
                     created_at=now, started_at=now, completed_at=None, taken_by="w", unique_key=None, limits=(),
                     backoff=backoff, meta={}, result=None, errors=[])


def _steps(label: str):
    def make():
        yield Statement(label.encode(), {})
    return make


# --- hooks ---------------------------------------------------------------------------------------
def test_hooks_belong_to_their_app_and_run_in_order() -> None:
    one, two = Chancy("postgresql://x@h/db"), Chancy("postgresql://x@h/db")
    seen = []
    one.hooks.on_completion(lambda app, record, transition: seen.append(("a", app)) or _steps("a"))
    remove_b = one.hooks.on_completion(lambda app, record, transition: seen.append(("b", app)) or _steps("b"))
    transition = Transition(uuid.uuid4(), JobState.SUCCEEDED, attempt=1)

    followed = one.hooks.with_follow_ups(_record(), transition)
    assert seen == [("a", one), ("b", one)]
    assert [s.query for s in followed.follow_up()] == [b"a", b"b"]
    assert two.hooks.with_follow_ups(_record(), transition) is transition  # the other app has none

    remove_b()
    remove_b()  # removing twice is harmless
    assert len(one.hooks.completion) == 1 + len(installed_hooks())


def test_a_hook_registered_twice_runs_once_and_a_failing_hook_is_skipped() -> None:
    app = Chancy("postgresql://x@h/db")

    def boom(app_, record, transition):
        raise RuntimeError("bug in a hook")

    hook = lambda app_, record, transition: _steps("kept")  # noqa: E731
    app.hooks.on_completion(boom)
    app.hooks.on_completion(hook)
    app.hooks.on_completion(hook)
    followed = app.hooks.with_follow_ups(_record(), Transition(uuid.uuid4(), JobState.FAILED, attempt=1))
    assert [s.query for s in followed.follow_up()] == [b"kept"]


def test_a_hook_that_adds_nothing_leaves_the_transition_as_it_is() -> None:
    app = Chancy("postgresql://x@h/db")
    app.hooks.on_completion(lambda app_, record, transition: None)
    transition = Transition(uuid.uuid4(), JobState.SUCCEEDED, attempt=1)
    assert app.hooks.with_follow_ups(_record(), transition) is transition


# --- backoff -------------------------------------------------------------------------------------
def test_backoff_delay_grows_and_caps() -> None:
    delays = [backoff_delay(n, base=1.0, factor=2.0, maximum=10.0, jitter=Jitter.NONE) for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(0, base=3.0, factor=2.0, maximum=10.0, jitter=Jitter.NONE) == 3


def test_backoff_jitter_half_and_full() -> None:
    random.seed(7)
    half = [backoff_delay(3, base=1.0, factor=2.0, maximum=60.0, jitter=Jitter.HALF) for _ in range(200)]
    assert all(2 <= d <= 4 for d in half) and len(set(half)) > 100
    full = {backoff_delay(3, base=1.0, factor=2.0, maximum=60.0, jitter=Jitter.FULL) for _ in range(400)}
    assert full == {0, 1, 2, 3, 4}  # whole seconds, 0 and the delay included (Celery's)


def test_a_jobs_retry_delay_is_its_backoffs_or_the_default() -> None:
    assert _record(3, Backoff(base=5, factor=3, jitter=False)).retry_delay() == 45
    assert DEFAULT_BACKOFF == Backoff(base=1.0, factor=2.0, jitter=True)
    assert 0.5 <= _record(1).retry_delay() <= 1.0  # its upper half of 1 s
    assert Backoff(base=5, jitter=False).delay(2) == backoff_delay(2, base=5, factor=2, maximum=3600,
                                                                   jitter=Jitter.NONE)


@pytest.mark.parametrize("factor,retries,maximum", [(1, 0, 600), (1, 4, 600), (3, 10, 600), (2, 3, 5), (1, 2, 0)])
def test_celery_autoretry_keeps_celerys_formula(factor, retries, maximum) -> None:
    assert exponential_backoff(factor, retries, maximum, False) == min(maximum, factor * 2 ** retries)
    drawn = {exponential_backoff(factor, retries, maximum, True) for _ in range(300)}
    assert drawn <= set(range(min(maximum, factor * 2 ** retries) + 1))
    assert all(isinstance(d, int) for d in drawn)


def test_rate_limit_sources_belong_to_their_app() -> None:
    """A Celery app's task limits reach the workers of its own core app only (they were
    read through a process-wide list of providers)."""
    from chancy.compat import Celery
    from chancy.rate_limits import RateLimit, limits_for

    limited = Celery("limited", broker="chancy+postgresql://x@h/db")
    other = Celery("other", broker="chancy+postgresql://x@h/db")

    @limited.task(name="limited.slow", rate_limit="2/s")
    def slow() -> None: ...

    @other.task(name="other.fast")
    def fast() -> None: ...

    assert limits_for(limited.chancy)["limited.slow"] == RateLimit(2, 1.0)
    assert "limited.slow" not in limits_for(other.chancy)
    assert "limited.slow" not in limits_for(Chancy("postgresql://x@h/db"))


def test_a_plain_core_worker_continues_celery_message_embeds_without_the_celery_layer_imported() -> None:
    """A core app's hooks hold the continuation of a stock Celery producer's link/chain
    embeds in a process that never imported chancy.compat (it was installed by importing
    the layer: a worker started from a script that did not lost every next chain step)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from chancy import Chancy\n"
        "hooks = Chancy('postgresql://x@h/db').hooks.completion\n"
        "print([f'{h.__module__}.{h.__name__}' for h in hooks])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['chancy.compat.embed.continue_embed']"
