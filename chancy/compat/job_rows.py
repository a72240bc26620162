"""What a call becomes: the job rows of a task signature (``.delay()``, ``apply_async``,
``send_task``, a beat entry) or of a canvas, with Celery's options, routing and metadata
(``meta["celery"]``, ``meta["canvas"]``). The one place a call turns into
:class:`~chancy.job.Job` rows, as :mod:`chancy.compat.protocol` is for the messages of a
stock Celery producer; the app sends what comes out (``Celery.publish``).

A canvas's jobs are all planned at once: the first steps runnable, the others parked
until their predecessors complete (see :mod:`chancy.compat.continuations`)."""

from __future__ import annotations

import weakref
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Mapping

import chancy.compat.message_options as message_options
import chancy.compat.payload as payload
import chancy.compat.routes as routes
from chancy.compat.canvas import Node, Signature, as_signature
from chancy.compat.concurrency_option import concurrency_options
from chancy.compat.exceptions import QueueNotFound
from chancy.compat.local import current_task_and_request
from chancy.compat.protocol import compat_priority, job_id_for
from chancy.compat.result import AsyncResult
from chancy.job import Job, Limit, new_job_id
from chancy.store.pg.celery_canvas import PARKED_AT

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery
    from chancy.compat.app.task import Context


#: ``meta["celery"]`` keys copied from a signature's options when set (key, option).
_CELERY_OPTIONS = (
    ("group", "group_id"), ("group_index", "group_index"), ("shadow", "shadow"), ("headers", "headers"),
    ("reply_to", "reply_to"), ("replaced_task_nesting", "replaced_task_nesting"),
    ("stamped_headers", "stamped_headers"), ("stamps", "stamps"),
)


def _seconds_or_time(value: Any, label: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.now(timezone.utc) + timedelta(seconds=value)
    if isinstance(value, str):
        return _seconds_or_time(datetime.fromisoformat(value), label)
    raise TypeError(f"{label} must be seconds or a datetime, got {value!r}")


#: Each app's ``task_routes`` as last prepared: (the value prepared, its routers).
_prepared_routes: "weakref.WeakKeyDictionary[Celery, tuple[Any, list[Any]]]" = weakref.WeakKeyDictionary()


def _routers(app: "Celery", spec: Any) -> list[Any]:
    """``task_routes`` prepared once per value assigned (as Celery prepares its router
    once): preparing compiles patterns and inspects router signatures."""
    cached = _prepared_routes.get(app)
    if cached is None or cached[0] is not spec:
        cached = _prepared_routes[app] = (spec, routes.prepare(spec))
    return cached[1]


def job_for(app: "Celery", sig: Signature, parked_at: datetime | None = None) -> Job:
    """The job row one task signature becomes (options, routing, Celery metadata).
    Every ``.delay()`` runs this: each option is read once, from the signature's own
    options (copied only when a router could see them), then the task, then the route."""
    conf = app.conf.current
    name, args, kwargs = sig.task, sig.args, sig.kwargs
    task = app.tasks.get(name)
    if task is not None and parked_at is None:
        task.check_arguments(args, kwargs)
    concurrency = concurrency_options(task, args, kwargs)
    opts = sig.options
    routers = _routers(app, conf["task_routes"])
    route: dict[str, Any] = {}
    if routers:
        opts = dict(opts)
        route = routes.route_for(routers, name, args, kwargs, opts, task)

    def pick(key: str, default: Any = None) -> Any:
        found = opts.get(key) if opts else None
        if found is None:
            found = getattr(task, key, None)
            if found is None and route:
                found = route.get(key)
        return default if found is None else found

    queue = pick("queue", conf["task_default_queue"])
    queue = getattr(queue, "name", queue)
    if opts.get("routing_key") and not opts.get("queue") and not getattr(task, "queue", None) and not route:
        queue = opts["routing_key"]
    if not conf["task_create_missing_queues"] and queue not in app.declared_queues():
        raise QueueNotFound(f"Queue {queue!r} missing from task_queues (task_create_missing_queues is off)")
    serializer = pick("serializer", conf["task_serializer"])
    encoded = None
    if serializer != "json":
        encoded = payload.encode(serializer, conf["accept_content"], args, kwargs)
        args, kwargs = (), {}
    scheduled_at = parked_at
    if scheduled_at is None and opts:
        countdown = opts.get("countdown")
        scheduled_at = (_seconds_or_time(countdown, "countdown") if countdown is not None
                        else _seconds_or_time(opts.get("eta"), "eta"))
    expires = pick("expires")
    expires_at = None if expires is None else _seconds_or_time(expires, "expires")
    hard = pick("time_limit", conf["task_time_limit"])
    soft = pick("soft_time_limit", conf["task_soft_time_limit"])
    max_retries = task.max_retries if task is not None else 3
    task_id = opts.get("task_id")
    if task_id is None:  # ours: time-ordered, and its own row id
        job_id = new_job_id()
        task_id = str(job_id)
        foreign_id = False
    else:
        task_id = str(task_id)
        job_id = job_id_for(task_id)
        foreign_id = str(job_id) != task_id
    running = current_task_and_request()
    parent: Context | None = running[1] if running and not running[1].called_directly else None
    # Only what is set: None means "absent" to every reader of meta["celery"].
    celery: dict[str, Any] = {
        "ignore_result": bool(pick("ignore_result", conf["task_ignore_result"])),
        "timelimit": [hard, soft],
        "track_started": bool(pick("track_started", conf["task_track_started"])),
        "eta": bool(scheduled_at and not parked_at),
        "origin": message_options.origin(),
    }
    root_id = parent.root_id if parent is not None else task_id
    if root_id is not None:
        celery["root_id"] = root_id
    if parent is not None and parent.id is not None:
        celery["parent_id"] = parent.id
    if encoded is not None:
        celery["payload"] = encoded
    if opts:
        for key, option in _CELERY_OPTIONS:
            value = opts.get(option)
            if value is not None:
                celery[key] = value
        properties = message_options.message_properties(opts)
        if properties:
            celery["properties"] = properties
    if foreign_id:
        celery["task_id"] = task_id
    priority = pick("priority", conf["task_default_priority"])
    if priority is None and parent is not None and conf["task_inherit_parent_priority"]:
        priority = (parent.delivery_info or {}).get("priority")
    acks_late = pick("acks_late", conf["task_acks_late"])
    return Job(
        name, args=args, kwargs=kwargs, queue=queue, priority=compat_priority(priority),
        max_attempts=(max_retries + 1 if max_retries is not None else 2**31 - 1) if acks_late else 1,
        scheduled_at=scheduled_at, expires_at=expires_at,
        limits=[Limit(Limit.Type.TIME, hard)] if hard else [],
        meta={"celery": celery}, id=job_id, **concurrency,
    )


def jobs_and_result(app: "Celery", sig: Signature) -> tuple[list[Job], Any]:
    """The jobs a signature or canvas becomes, and the result handle of the call."""
    if type(sig) is Signature and not sig.options.get("link") and not sig.options.get("link_error"):
        # One task, nothing wired to it: the planner would return this same job.
        job = job_for(app, sig)
        return [job], AsyncResult.of_job(job, app)
    planner = Planner(app)
    node = sig.plan(planner, parked=False)
    return planner.planned_jobs(), node.result


# --- the planner: a canvas becomes job rows ------------------------------------------------------


class Planner:
    """Turns a signature tree into jobs. Wiring (``then`` / ``after`` counters) is kept in
    dicts by job id until :meth:`jobs` writes it into each job's meta."""

    def __init__(self, app: "Celery") -> None:
        self.app = app
        self.order: list[str] = []
        self.jobs: dict[str, Job] = {}
        self.canvas: dict[str, dict[str, Any]] = {}
        self.parent_of: dict[str, str] = {}

    def task_node(self, sig: Signature, parked: bool) -> Node:
        job = job_for(self.app, sig, parked_at=PARKED_AT if parked else None)
        key = str(job.id)
        self.order.append(key)
        self.jobs[key] = job
        self.canvas[key] = {}
        if parked:
            self.canvas[key].update(after=[], remaining=0, pass_result=not sig.immutable, join=False)
            delay = _delay_of(sig.options)
            if delay:
                self.canvas[key]["delay"] = delay  # counted from the moment the step is released
        for callback in _as_list(sig.options.get("link")):
            node = as_signature(callback, self.app).plan(self, True)
            self.connect(Node([job], [job], None), node)
        for errback in _as_list(sig.options.get("link_error")):
            node = as_signature(errback, self.app).plan(self, True)
            for entry in node.entries:
                self.canvas[key].setdefault("errbacks", []).append(str(entry.id))
                self.parent_of[str(entry.id)] = key
                self.canvas[str(entry.id)].update(remaining=1, pass_result=False, errback=True)
        return Node(entries=[job], exits=[job], result=AsyncResult.of_job(job, self.app))

    def connect(self, before: Node, after: Node) -> None:
        """``after``'s entries wait for every exit of ``before``."""
        waited = [str(x.id) for x in before.exits]
        for entry in after.entries:
            wiring = self.canvas[str(entry.id)]
            wiring["after"] = waited
            wiring["remaining"] = len(waited)
            wiring["join"] = before.join
            for exit_id in waited:
                self.canvas[exit_id].setdefault("then", []).append(str(entry.id))
            self.parent_of[str(entry.id)] = waited[-1]

    def _downstream(self, key: str, seen: set[str]) -> list[str]:
        found = []
        for nxt in self.canvas[key].get("then", []):
            if nxt not in seen:
                seen.add(nxt)
                found += [nxt] + self._downstream(nxt, seen)
        return found

    def _celery_id(self, key: str) -> str:
        return self.jobs[key].meta["celery"].get("task_id", key)

    def planned_jobs(self) -> list[Job]:
        """The jobs with their wiring; every job shares the canvas's root id and names the
        step it follows as its parent (as Celery's workers record them)."""
        jobs = []
        root_id = self.jobs[self.order[0]].meta["celery"]["root_id"]
        for key in self.order:
            celery = dict(self.jobs[key].meta["celery"], root_id=root_id)
            if key in self.parent_of:
                celery["parent_id"] = self._celery_id(self.parent_of[key])
            wiring = dict(self.canvas[key])
            downstream = self._downstream(key, set())
            if downstream:
                wiring["downstream"] = downstream
                dropped = [e for d in downstream for e in self.canvas[d].get("errbacks", [])]
                if dropped:
                    wiring["dropped"] = dropped
            job = self.jobs[key]
            meta = {**job.meta, "celery": celery}
            if wiring:
                meta["canvas"] = wiring
            jobs.append(job.with_options(meta=meta))
        return jobs


def _delay_of(options: Mapping[str, Any]) -> float | None:
    """A waiting step's ``countdown`` (or what is left until its ``eta``), in seconds."""
    if options.get("countdown") is not None:
        return float(options["countdown"])
    eta = options.get("eta")
    if eta is None:
        return None
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if eta.tzinfo is None:
        eta = eta.replace(tzinfo=timezone.utc)
    return max(0.0, (eta - datetime.now(timezone.utc)).total_seconds())


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
