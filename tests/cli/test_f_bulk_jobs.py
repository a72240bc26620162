"""``chancy jobs retry|cancel|delete`` by filter, as a subprocess: what each selects and
changes, the states each may touch, dry runs, batches, rows held by others skipped, and
bad filters refused with exit 2."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Callable

import psycopg
import pytest

from chancy import Chancy, Job
from cli_helpers import Result


def _seed(dsn: str) -> dict[str, list[uuid.UUID]]:
    """Jobs of every kind the filters tell apart, states set as a worker would leave them."""
    app = Chancy(dsn)
    asyncio.run(app.migrate())
    groups = {
        "recent_failed_a": [Job("shop.a", args=[i]) for i in range(5)],
        "old_failed_a": [Job("shop.a", args=["old"])],
        "failed_b": [Job("shop.b", args=[1]), Job("shop.b", kwargs={"note": "Needle_in 50% of hay"})],
        "pending_a": [Job("shop.a", args=["p1"]), Job("shop.a", args=["p2"], queue="emails")],
        "running_a": [Job("shop.a", args=["r"])],
        "succeeded_a": [Job("shop.a", args=["s"])],
    }
    ids = {name: [ref.id for ref in app.push_many_sync(jobs)] for name, jobs in groups.items()}
    app.close_sync()
    with psycopg.connect(dsn, autocommit=True) as conn:
        def set_state(name: str, state: str, extra: str = "") -> None:
            conn.execute(f"UPDATE chancy_jobs SET state = %s, attempts = 1 {extra} WHERE id = ANY(%s)",
                         [state, ids[name]])
        for name in ("recent_failed_a", "old_failed_a", "failed_b"):
            set_state(name, "failed", ", completed_at = now()")
        conn.execute("UPDATE chancy_jobs SET created_at = now() - interval '3 hours' WHERE id = ANY(%s)",
                     [ids["old_failed_a"]])
        set_state("running_a", "running", ", started_at = now(), taken_by = 'elsewhere:1:x'")
        set_state("succeeded_a", "succeeded", ", completed_at = now()")
    return ids


def _states(dsn: str) -> dict[uuid.UUID, tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, state, max_attempts FROM chancy_jobs")}


def test_retry_cancel_and_delete_by_filter(chancy: Callable[..., Result], dsn: str) -> None:
    ids = _seed(dsn)
    dry = chancy("jobs", "retry", "--state", "failed", "--task", "shop.a", "--since", "1h", "--dry-run", "--json")
    assert dry.code == 0 and dry.json() == {"action": "retry", "dry_run": True, "matched": 5}, dry
    assert all(state == "failed" for state, _ in (_states(dsn)[i] for i in ids["recent_failed_a"]))

    done = chancy("jobs", "retry", "--state", "failed", "--task", "shop.a", "--since", "1h", "--batch-size", "2")
    assert (done.code, done.out.strip()) == (0, "retried 5 job(s)"), done
    states = _states(dsn)
    assert [states[i] for i in ids["recent_failed_a"]] == [("pending", 2)] * 5  # one more attempt each
    assert states[ids["old_failed_a"][0]][0] == "failed" and {states[i][0] for i in ids["failed_b"]} == {"failed"}

    # Arguments text: any case, LIKE's wildcards taken literally.
    found = chancy("jobs", "retry", "--text", "needle_IN 50%", "--dry-run", "--json")
    assert found.json()["matched"] == 1, found
    assert chancy("jobs", "retry", "--text", "needleXin", "--dry-run", "--json").json()["matched"] == 0

    cancelled = chancy("jobs", "cancel", "--task", "shop.a", "--queue", "default", "--json")
    assert cancelled.json() == {"action": "cancel", "dry_run": False, "changed": 7}, cancelled  # 5 retried, p1, running
    states = _states(dsn)
    assert states[ids["running_a"][0]][0] == "cancelled" and states[ids["pending_a"][1]][0] == "pending"

    deleted = chancy("jobs", "delete", "--until", "1h")  # only the old failed job was created before then
    assert (deleted.code, deleted.out.strip()) == (0, "deleted 1 job(s)"), deleted
    refused = chancy("jobs", "delete", "--state", "pending")
    assert refused.code == 2 and "cannot delete pending jobs" in refused.err and "force" in refused.err, refused
    forced = chancy("jobs", "delete", "--state", "pending", "--force", "--json")
    assert forced.json()["changed"] == 1, forced
    assert ids["pending_a"][1] not in _states(dsn)


def test_single_job_commands_keep_working(chancy: Callable[..., Result], dsn: str) -> None:
    ids = _seed(dsn)
    failed, running = ids["failed_b"][0], ids["running_a"][0]
    assert chancy("jobs", "retry", str(failed)).out.strip() == f"job {failed} is pending again"
    again = chancy("jobs", "retry", str(failed))
    assert again.code == 7 and "only failed, cancelled or expired" in again.err, again
    refused = chancy("jobs", "delete", str(running))
    assert refused.code == 7 and "is running: cancel it first" in refused.err, refused
    assert chancy("jobs", "cancel", str(running)).out.strip() == f"job {running} cancelled"
    assert chancy("jobs", "delete", str(running)).out.strip() == "deleted 1 job(s)"
    assert running not in _states(dsn)


@pytest.mark.parametrize("args, message", [
    (["retry"], "give a job id, or filters"),
    (["retry", "--state", "bogus"], "'bogus' is not one of"),
    (["retry", "--state", "running"], "cannot retry running jobs: retry applies only to cancelled, expired, failed"),
    (["cancel", "--state", "succeeded"], "cannot cancel succeeded jobs"),
    (["retry", "--since", "yesterday"], "'yesterday' is neither a duration such as 90s"),
    (["retry", "--until", "5 parsecs"], "is neither a duration"),
    (["retry", "--since", "99999999w"], "reaches back before the year 1"),
    (["retry", "--since", "1h", "--until", "2h"], "--since must be earlier than --until"),
    (["retry", "--batch-size", "0", "--all"], "0 is not in the range"),
    (["retry", str(uuid.UUID(int=1)), "--state", "failed"], "either a job id or filters, not both"),
    (["delete", "not-a-uuid"], "'not-a-uuid' is not a job id"),
])
def test_bad_filters_exit_2_saying_what_to_fix(cli_run: Callable[..., Result], dsn: str, args: list[str],
                                              message: str) -> None:
    asyncio.run(Chancy(dsn).migrate())
    result = cli_run("jobs", *args)
    assert result.code == 2 and message in result.err, result


def test_a_batch_skips_rows_held_elsewhere_and_never_waits(chancy: Callable[..., Result], dsn: str) -> None:
    """A row locked by another transaction (a worker writing it back) is skipped, not
    waited for: the bulk action finishes and changes the others."""
    ids = _seed(dsn)
    held = ids["recent_failed_a"][0]
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1 FROM chancy_jobs WHERE id = %s FOR UPDATE", [held])
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        started = time.monotonic()
        done = chancy("jobs", "retry", "--state", "failed", "--task", "shop.a", "--json", timeout=60)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert done.json()["changed"] == 5, done  # 4 recent + the old one; the held one skipped
    assert _states(dsn)[held][0] == "failed" and elapsed < 30
