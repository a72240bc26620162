"""``Task.replace()`` on a worker: the running task hands its place in the workflow to a
new signature, in one transaction.

The replaced job's row cannot be reused while it runs, so it stays the handle: it is
parked (like a later canvas step) waiting for the replacement's last steps, and once
released it only passes their result on (a list for a group, as Celery's accumulate
does). Its own wiring — the next chain step, chord counter, group membership, links —
is untouched, so the workflow around it goes on; a failing replacement fails it and the
steps after it. The replacement's tasks run with ``replaced_task_nesting`` one higher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import chancy.compat.transactions as transactions
from chancy.compat.canvas import chain
from chancy.compat.exceptions import ImproperlyConfigured
from chancy.compat.job_rows import Planner
from chancy.execution import current_job
from chancy.store.pg.celery_canvas import replace_sync

if TYPE_CHECKING:
    from chancy.compat.app.task import Context, Task
    from chancy.compat.canvas import Signature
    from chancy.job import Job


def replace_running(task: "Task", request: "Context", sig: "Signature") -> None:
    """Insert ``sig``'s jobs and park the running job behind them (see the module doc)."""
    if isinstance(sig, chain) and not sig.tasks:
        raise ImproperlyConfigured("Cannot replace with an empty chain")
    assert task.app is not None
    record = current_job.get()
    planner = Planner(task.app)
    node = sig.plan(planner, parked=False)
    own = dict(record.meta.get("canvas") or {})
    follows = [str(record.id), *own.get("downstream", [])]
    jobs = [_wired(job, [str(x.id) for x in node.exits], follows, request.replaced_task_nesting + 1, str(record.id))
            for job in planner.planned_jobs()]
    waiting = {**own, "after": [str(x.id) for x in node.exits], "remaining": len(node.exits),
               "pass_result": True, "join": node.join}
    chancy = task.app.chancy
    if not replace_sync(chancy.store, lambda conn: transactions.push(chancy, jobs, connection=conn), record, waiting):
        raise RuntimeError(f"task {request.id} can no longer be replaced: its run was taken back "
                           "(revoked, timed out or recovered) while it ran")


def _wired(job: "Job", exits: list[str], follows: list[str], nesting: int, replaced_id: str) -> "Job":
    """A replacement job with its nesting level; its last steps release the replaced job,
    and a failure anywhere fails the replaced job and what follows it."""
    celery = {**job.meta.get("celery", {}), "replaced_task_nesting": nesting}
    canvas: dict[str, Any] = dict(job.meta.get("canvas") or {})
    if str(job.id) in exits:
        canvas["then"] = [*canvas.get("then", []), replaced_id]
    canvas["downstream"] = [*canvas.get("downstream", []), *follows]
    return job.with_options(meta={**job.meta, "celery": celery, "canvas": canvas})
