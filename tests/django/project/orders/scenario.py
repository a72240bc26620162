"""Everything the tests check on a running worker, from one Django process (run through
``manage.py shell``): it prints one JSON object, the observations, as its last line."""
import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import setup_test_environment

from chancy.contrib.django import default_app
from chancy.contrib.django.framework import InvalidTask, TaskResultDoesNotExist, task_enqueued
from chancy.contrib.django.results import MARKER
from chancy.job import Job
from orders import tasks
from orders.models import Order
from proj.jobs import tag_order

POOLS = ["process", "thread", "asyncio", "solo"]
#: Seconds to wait for a job (the machine is shared and slow at times).
PATIENCE = 60


class Rollback(Exception):
    pass


def finished(result: Any) -> Any:
    deadline = time.monotonic() + PATIENCE
    while True:
        result.refresh()
        if result.is_finished:
            return result
        assert time.monotonic() < deadline, f"{result.id} still {result.status}"
        time.sleep(0.05)


def job_row(job_id: str) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT state, priority, queue, func, scheduled_at FROM chancy_jobs WHERE id = %s",
                       [job_id])
        return cursor.fetchone()


def jobs_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM chancy_jobs")
        return cursor.fetchone()[0]


def raises(call: Callable[[], Any]) -> str | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the name is the observation
        return f"{type(exc).__name__}: {exc}"
    return None


def summary(result: Any) -> dict[str, Any]:
    done = finished(result)
    return {
        "status": str(done.status),
        "value": done.return_value if str(done.status) == "SUCCESSFUL" else None,
        "errors": [(e.exception_class.__name__, e.traceback.strip().splitlines()[-1]) for e in done.errors],
        "attempts": done.attempts,
        "timed": all((done.enqueued_at, done.started_at, done.finished_at, done.last_attempted_at)),
    }


def in_atomic(commit: bool, push: Callable[[], Any], using: str = "default") -> str:
    """Push inside transaction.atomic(using=…); the pushed id."""
    pushed: list[Any] = []
    try:
        with transaction.atomic(using=using):
            pushed.append(push())
            if not commit:
                raise Rollback
    except Rollback:
        pass
    return str(pushed[0])


def per_pool(pool: str) -> dict[str, Any]:
    """The framework's tasks, a native and a Celery-style one, run on ``pool``'s queue."""
    seen: dict[str, Any] = {}
    seen["add"] = summary(tasks.add.using(queue_name=pool).enqueue(2, 3))
    seen["add_async"] = summary(tasks.add_async.using(queue_name=pool).enqueue(2, b=3))
    seen["fail"] = summary(tasks.fail.using(queue_name=pool).enqueue(f"boom on {pool}"))
    context = tasks.whoami.using(queue_name=pool).enqueue(pool)
    seen["whoami"] = summary(context)
    seen["whoami_id_matches"] = seen["whoami"]["value"]["id"] == context.id
    seen["unstorable"] = summary(tasks.unstorable.using(queue_name=pool).enqueue())
    # A push inside transaction.atomic() exists only if the block commits: framework…
    rolled_back = in_atomic(False, lambda: tasks.create_order.using(queue_name=pool).enqueue(f"R-{pool}", 1).id)
    committed = in_atomic(True, lambda: tasks.create_order.using(queue_name=pool).enqueue(f"C-{pool}", 2).id)
    seen["framework_rolled_back"] = [job_row(rolled_back), raises(lambda: tasks.create_order.get_result(rolled_back))]
    seen["framework_committed"] = summary(tasks.create_order.get_result(committed))
    # …native (a DjangoChancy task)…
    Order.objects.get_or_create(number=f"N-{pool}")
    native = tag_order.defaults.with_options(queue=pool)
    gone = in_atomic(False, lambda: default_app().push_sync(native.with_arguments((f"N-{pool}", "lost"), {})).id)
    kept = in_atomic(True, lambda: default_app().push_sync(native.with_arguments((f"N-{pool}", pool), {})).id)
    seen["native_rolled_back"] = job_row(gone)
    seen["native_committed"] = default_app().wait_sync(kept, timeout=PATIENCE).state.value
    # …and the Celery-compatible API (chancy.compat), its .delay() joining the same block.
    gone = in_atomic(False, lambda: tasks.multiply.apply_async((6, 7), queue=pool).id)
    kept = in_atomic(True, lambda: tasks.multiply.apply_async((6, 7), queue=pool).id)
    seen["compat_rolled_back"] = job_row(gone)
    seen["compat_committed"] = tasks.multiply.AsyncResult(kept).get(timeout=PATIENCE)
    seen["orders"] = sorted(Order.objects.filter(number__endswith=pool).values_list("number", "total", "note"))
    return seen


def other_alias() -> dict[str, Any]:
    """Inside an atomic block on another alias (of the same database), the compat API and a
    DjangoChancy on that alias join it too."""
    from chancy.contrib.django import DjangoChancy

    jobs_app = DjangoChancy(database="jobs")
    native = tag_order.job("nobody", "x").with_options(queue="idle")
    compat = [in_atomic(commit, lambda: tasks.multiply.apply_async((1, 2), queue="idle").id, "jobs")
              for commit in (False, True)]
    own = [in_atomic(commit, lambda: jobs_app.push_sync(native).id, "jobs") for commit in (False, True)]
    return {"compat": [job_row(job_id) and job_row(job_id)[0] for job_id in compat],
            "native": [job_row(job_id) and job_row(job_id)[0] for job_id in own]}


def validation() -> dict[str, Any]:
    """Bad input is refused at enqueue, with the framework's error, and leaves no job."""
    before = jobs_count()
    naive = datetime(2030, 1, 1)
    seen = {
        "priority_high": raises(lambda: tasks.add.using(priority=101)),
        "priority_fraction": raises(lambda: tasks.add.using(priority=1.5)),
        "unknown_queue": raises(lambda: tasks.add.using(queue_name="nowhere")),
        "naive_run_after": raises(lambda: tasks.add.using(run_after=naive)),
        "unserializable": raises(lambda: tasks.add.enqueue(object(), 1)),
        "undecodable_bytes": raises(lambda: tasks.add.enqueue(b"\xff", 1)),
    }
    seen["rows_added"] = jobs_count() - before
    seen["invalid_task_class"] = InvalidTask.__name__
    return seen


def results_api() -> dict[str, Any]:
    failed = finished(tasks.fail.using(queue_name="thread").enqueue("x"))
    native = default_app().push_sync(tag_order.job("nobody", "x").with_options(queue="idle"))
    return {
        "not_a_uuid": raises(lambda: tasks.add.get_result("not-a-uuid")),
        "unknown_id": raises(lambda: tasks.add.get_result(str(uuid.uuid4()))),
        "native_job": raises(lambda: tasks.add.get_result(str(native.id))),
        "other_task": raises(lambda: tasks.add.get_result(failed.id)),
        "return_value_of_failed": raises(lambda: failed.return_value),
        "does_not_exist_class": TaskResultDoesNotExist.__name__,
    }


def priorities_and_defer() -> dict[str, Any]:
    ranked = tasks.ranked.using(queue_name="idle").enqueue()
    lowest = tasks.ranked.using(queue_name="idle", priority=-100).enqueue()
    run_after = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    deferred = tasks.add.using(queue_name="thread", run_after=run_after).enqueue(1, 1)
    waiting = tasks.add.get_result(deferred.id)
    state = job_row(deferred.id)[0]
    done = finished(deferred)
    return {
        "priorities": [job_row(ranked.id)[1], job_row(lowest.id)[1]],
        "deferred_first": str(waiting.status),
        "deferred_state": state,
        "deferred_waited": done.started_at >= run_after,
        "deferred_value": done.return_value,
    }


def asynchronous() -> dict[str, Any]:
    async def go() -> list[Any]:
        result = await tasks.add.using(queue_name="asyncio").aenqueue(20, 22)
        deadline = time.monotonic() + PATIENCE
        while not result.is_finished and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await result.arefresh()
        again = await tasks.add.aget_result(result.id)
        return [str(again.status), again.return_value]

    return {"aenqueue": asyncio.run(go())}


def hostile() -> dict[str, Any]:
    """A job someone wrote naming a function that is no task (with the framework's marker)."""
    ref = default_app().push_sync(Job("os.system", args=["echo hacked"], queue="thread", meta={MARKER: "default"}))
    record = default_app().wait_sync(ref, timeout=PATIENCE)
    return {"state": record.state.value, "error": record.errors[-1]["type"] if record.errors else None,
            "get_result": raises(lambda: tasks.add.get_result(str(ref.id)))}


def admin() -> dict[str, Any]:
    setup_test_environment()
    failed = finished(tasks.fail.using(queue_name="thread").enqueue("admin detail"))
    idle = tasks.add.using(queue_name="idle").enqueue(1, 2)
    User.objects.create_superuser("root", "root@example.com", "pw")
    clerk = User.objects.create_user("clerk", "clerk@example.com", "pw", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.login(username="root", password="pw")
    listing = client.get("/admin/chancy/job/", {"state__exact": "failed", "queue": "thread"})
    detail = client.get(f"/admin/chancy/job/{failed.id}/change/")
    by_name = client.get("/admin/chancy/job/", {"q": "orders.tasks.fail"})
    by_id = client.get("/admin/chancy/job/", {"q": failed.id})
    by_garbage = client.get("/admin/chancy/job/", {"q": "no such thing"})
    seen: dict[str, Any] = {
        "list": [listing.status_code, failed.id in listing.content.decode()],
        "search": [by_name.status_code, failed.id in by_name.content.decode(), by_id.status_code,
                   failed.id in by_id.content.decode(), by_garbage.status_code],
        "detail": [detail.status_code, "admin detail" in detail.content.decode(),
                   "Traceback" in detail.content.decode()],
    }
    # A clerk who may only view sees no action, and a forged POST changes nothing.
    as_clerk = Client()
    as_clerk.login(username="clerk", password="pw")
    page = as_clerk.get("/admin/chancy/job/").content.decode()
    as_clerk.post("/admin/chancy/job/", {"action": "cancel_jobs", "_selected_action": [idle.id]})
    seen["clerk"] = ["cancel_jobs" in page, job_row(idle.id)[0]]
    clerk.user_permissions.add(Permission.objects.get(codename="cancel_job"))
    as_clerk = Client()
    as_clerk.login(username="clerk", password="pw")
    as_clerk.post("/admin/chancy/job/", {"action": "cancel_jobs", "_selected_action": [idle.id]})
    seen["cancelled"] = [job_row(idle.id)[0], str(tasks.add.get_result(idle.id).status)]
    client.post("/admin/chancy/job/", {"action": "retry_jobs", "_selected_action": [failed.id]})
    seen["retried"] = summary(tasks.fail.get_result(failed.id))["attempts"]
    seen["queue_filter"] = [f"?queue={pool}" in listing.content.decode() for pool in POOLS]
    seen["page_counts"] = page_counts(client)
    return seen


def page_counts(client: Client) -> list[bool]:
    """Unfiltered, a big table's page count is Postgres's estimate (12,000 rows analyzed, then
    2,000 deleted: the estimate still says 12,000); filtered, the count is exact."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE chancy_jobs SET (autovacuum_enabled = false)")
        cursor.execute("INSERT INTO chancy_jobs (id, queue, func, state) SELECT gen_random_uuid(), 'bulk', 'x', "
                       "'succeeded' FROM generate_series(1, 12000)")
        cursor.execute("ANALYZE chancy_jobs")
        cursor.execute("DELETE FROM chancy_jobs WHERE id IN (SELECT id FROM chancy_jobs WHERE queue = 'bulk' "
                       "LIMIT 2000)")
        cursor.execute("SELECT reltuples::bigint, (SELECT count(*) FROM chancy_jobs) FROM pg_class "
                       "WHERE oid = 'chancy_jobs'::regclass")
        estimate, exact = cursor.fetchone()
    everything = client.get("/admin/chancy/job/").content.decode()
    failed = client.get("/admin/chancy/job/", {"state__exact": "failed"}).content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM chancy_jobs WHERE state = 'failed'")
        failures = cursor.fetchone()[0]
    return [f"{estimate} jobs" in everything, f"{exact} jobs" not in everything, f"{failures} jobs" in failed]


def database_settings() -> dict[str, Any]:
    """The DSN built from a DATABASES entry: its libpq OPTIONS kept, Django's own dropped;
    a database that is not Postgres, or an OPTIONS key libpq does not know, refused."""
    from django.db import connections
    from psycopg.conninfo import conninfo_to_dict

    from chancy.contrib.django.database import database_dsn
    from chancy.redaction import redact

    base = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "web", "PASSWORD": "p w'secret",
            "HOST": "db.internal", "PORT": 6543, "OPTIONS": {"sslmode": "require", "isolation_level": 1,
                                                             "pool": True, "server_side_binding": True}}
    connections.settings["postgres"] = base
    connections.settings["lite"] = {**base, "ENGINE": "django.db.backends.sqlite3"}
    connections.settings["typo"] = {**base, "OPTIONS": {"sslmdoe": "require"}}
    dsn = database_dsn("postgres")
    return {
        "params": conninfo_to_dict(dsn),
        "redacted": "secret" not in redact(dsn),
        "sqlite": raises(lambda: database_dsn("lite")),
        "typo": raises(lambda: database_dsn("typo")),
    }


def run() -> None:
    enqueued: list[str] = []
    task_enqueued.connect(lambda sender, task_result, **_: enqueued.append(task_result.id), weak=False)
    seen: dict[str, Any] = {pool: per_pool(pool) for pool in POOLS}
    seen.update(other_alias=other_alias(), validation=validation(), results=results_api(), priorities=priorities_and_defer(),
                asynchronous=asynchronous(), hostile=hostile(), admin=admin())
    seen["enqueued_signals"] = len(enqueued)
    seen["database_settings"] = database_settings()
    seen["call_command"] = [raises(lambda: call_command("chancy", "status", "--json")),
                            raises(lambda: call_command("chancy", "jobs", "show", str(uuid.uuid4())))]
    print(json.dumps(seen, default=str))
