"""Celery's canvas: signatures, ``chain``, ``group``, ``chord``, ``chunks``, ``map`` /
``starmap``, ``link`` / ``link_error``.

Applying a canvas inserts *all* its jobs at once, in one statement (see
:mod:`chancy.compat.continuations` for how the worker then advances it): the first steps
are runnable, the others are parked until their predecessors complete. So every result
id exists as a row from the start, a revoke of a later step is durable, and a crash
between two steps cannot lose the rest of the workflow.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from chancy.compat.local import app_with_task, get_current_app
from chancy.compat.result import AsyncResult, GroupResult
from chancy.compat.stamps import stamp
from chancy.execution import registry
from chancy.job import Job

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery
    from chancy.compat.job_rows import Planner


class Signature(dict):
    """A task call that can be passed around: ``task.s(2, 2)``, ``signature('name', …)``.
    A dict in Celery's wire format (task, args, kwargs, options, subtask_type, immutable)."""

    def __init__(self, task: Any = None, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, type: Any = None, subtask_type: str | None = None,
                 immutable: bool = False, app: "Celery | None" = None, **ex: Any) -> None:
        if isinstance(task, dict):  # a signature dict from the wire
            super().__init__(copy.deepcopy(task))
            self.setdefault("options", {})
            self._app = app
            return
        name = task if isinstance(task, str) else getattr(task, "name", None)
        if name is None:
            raise TypeError(f"signature() needs a task or a task name, got {task!r}")
        options = dict(options or {}, **ex)
        immutable = bool(options.pop("immutable", immutable))
        super().__init__(task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}), options=options,
                         subtask_type=subtask_type, immutable=immutable)
        self._app = app or getattr(task, "app", None)

    def __deepcopy__(self, memo: dict[int, Any]) -> "Signature":
        """Copies the call, shares the app."""
        sig = type(self).__new__(type(self))
        dict.__init__(sig, {k: copy.deepcopy(v, memo) for k, v in self.items()})
        sig._app = self._app
        return sig

    # --- fields ----------------------------------------------------------------------------
    task = property(lambda self: self["task"])
    args = property(lambda self: tuple(self["args"]))
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    immutable = property(lambda self: self["immutable"])
    subtask_type = property(lambda self: self["subtask_type"])

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def app(self) -> "Celery":
        if self._app is None:
            self._app = get_current_app()
        return self._app

    @property
    def type(self) -> Any:
        return self.app.tasks[self.task]

    def __repr__(self) -> str:
        arguments = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.task}({arguments}){'!' if self.immutable else ''}"

    # --- deriving ----------------------------------------------------------------------------
    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "Signature":
        """A copy with partial arguments: new args go *in front*, as in Celery."""
        sig = type(self).__new__(type(self))
        dict.__init__(sig, dict(self))
        sig._app = self._app
        if not self.immutable:
            sig["args"] = tuple(args or ()) + self.args
            sig["kwargs"] = {**self.kwargs, **(kwargs or {})}
        sig["options"] = {**copy.deepcopy(self.options), **options}
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> "Signature":
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def freeze(self, _id: str | None = None, **_: Any) -> "AsyncResult":
        """Fix the task id now (the result handle exists before the task is sent)."""
        if _id is not None:
            self.options["task_id"] = _id
        task_id = self.options.setdefault("task_id", self.app.new_task_id())
        return AsyncResult(task_id, app=self.app)

    def stamp(self, visitor: Any = None, append_stamps: bool = False, **headers: Any) -> None:
        """Mark every task of this signature with headers (see :mod:`chancy.compat.stamps`)."""
        stamp(self, visitor, **headers)

    def link(self, callback: "Signature") -> "Signature":
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: "Signature") -> "Signature":
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: "Signature") -> "Signature":
        self.link_error(errback)
        return self

    # --- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """``~sig``: send it and wait for its value (Celery's shorthand)."""
        return self.apply_async().get()

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Enqueue (eager under ``task_always_eager``). ``connection=`` enqueues in the
        caller's transaction; ``on_commit=True`` once Django's transaction commits."""
        connection = options.pop("connection", None)  # never copied: a live connection
        on_commit = bool(options.pop("on_commit", False))
        return self.clone(args, kwargs, **options).send(connection=connection, on_commit=on_commit)

    def send(self, connection: Any = None, on_commit: bool = False) -> Any:
        """Enqueue this signature as it is (``apply_async`` sends a copy; a task's
        ``apply_async`` sends the signature it just built, which nobody else holds)."""
        if self.app.conf.current["task_always_eager"]:
            return self.apply()
        return self.app.publish(self, connection=connection, on_commit=on_commit)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run now in this process (eager), following links; returns an EagerResult."""
        sig = self.clone(args, kwargs, **options)
        opts = {k: v for k, v in sig.options.items() if k in ("task_id", "headers", "throw")}
        result = sig.type.apply(sig.args, sig.kwargs, **opts)
        links = sig.options.get("link_error" if result.failed() else "link") or []
        for link in links:
            link = Signature(link, app=self._app)
            link.apply((result.id,) if result.failed() else (result.result,))
        return result

    def __or__(self, other: Any) -> Any:
        if isinstance(other, group):
            return chain(self, other, app=self._app)
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    # --- planning ---------------------------------------------------------------------------
    def plan(self, planner: "Planner", parked: bool) -> "Node":
        return planner.task_node(self, parked)


class chain(Signature):  # noqa: N801 - Celery's name
    """Run tasks one after another, each getting the previous result first."""

    def __init__(self, *tasks: Any, app: "Celery | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        steps: list[Signature] = []
        for task in tasks:
            steps.extend(task.tasks if type(task) is chain else [task])
        dict.__init__(self, task="celery.chain", args=(), kwargs={"tasks": steps}, options=options,
                      subtask_type="chain", immutable=False)
        self._app = app or next((t._app for t in steps if getattr(t, "_app", None)), None)

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "chain":
        steps = [t.clone() for t in self.tasks]
        if args or kwargs:
            steps[0] = steps[0].clone(args, kwargs)
        return chain(*steps, app=self._app, **{**self.options, **options})

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        result, previous = None, None
        for step in self.clone(args, kwargs).tasks:
            result = step.apply((result.get(),) if result is not None else ())
            result.parent = previous
            previous = result
        return result

    def link(self, callback: Signature) -> Signature:
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Signature) -> Signature:
        for task in self.tasks:
            task.link_error(errback.clone())
        return errback

    def plan(self, planner: "Planner", parked: bool) -> "Node":
        if not self.tasks:
            raise ValueError("chain() needs at least one task")
        nodes: list[Node] = []
        for i, step in enumerate(self.tasks):
            node = step.plan(planner, parked or i > 0)
            if nodes:
                planner.connect(nodes[-1], node)
            nodes.append(node)
        for earlier, later in itertools.pairwise(nodes):
            root = later.first_result or later.result
            if root.parent is None:
                root.parent = earlier.result
        return Node(entries=nodes[0].entries, exits=nodes[-1].exits, result=nodes[-1].result,
                    first_result=nodes[0].first_result or nodes[0].result, join=nodes[-1].join)


class group(Signature):  # noqa: N801 - Celery's name
    """Run tasks in parallel; the result is a GroupResult, in the order given."""

    def __init__(self, *tasks: Any, app: "Celery | None" = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        tasks = tuple(t if isinstance(t, Signature) else Signature(t, app=app) for t in tasks)
        dict.__init__(self, task="celery.group", args=(), kwargs={"tasks": list(tasks)}, options=options,
                      subtask_type="group", immutable=False)
        self._app = app or next((t._app for t in tasks if getattr(t, "_app", None)), None)

    @property
    def tasks(self) -> list[Signature]:
        return self.kwargs["tasks"]

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "group":
        return group([t.clone(args, kwargs) for t in self.tasks], app=self._app, **{**self.options, **options})

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature) and not isinstance(other, (group, chain)):
            return chord(self, other, app=self._app)
        return chain(self, other, app=self._app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        results = [t.apply(args, kwargs) for t in self.tasks]
        return GroupResult(self.options.get("task_id") or self.app.new_task_id(), results, app=self._app)

    def link(self, callback: Signature) -> Signature:
        for task in self.tasks:
            task.link(callback.clone())
        return callback

    def link_error(self, errback: Signature) -> Signature:
        for task in self.tasks:
            task.link_error(errback.clone())
        return errback

    def plan(self, planner: "Planner", parked: bool) -> "Node":
        group_id = self.options.get("task_id") or self.app.new_task_id()
        nodes = []
        shared = {k: v for k, v in self.options.items() if k not in ("task_id", "link", "link_error")}
        for index, task in enumerate(self.tasks):
            # Options given to the group (queue, priority, countdown…) apply to every
            # member that does not set its own, as in Celery.
            inherited = {k: v for k, v in shared.items() if k not in task.options}
            task = task.clone(group_id=group_id, group_index=index, **inherited)
            nodes.append(task.plan(planner, parked))
        result = GroupResult(group_id, [n.result for n in nodes], app=self.app)
        return Node(entries=[e for n in nodes for e in n.entries], exits=[x for n in nodes for x in n.exits],
                    result=result, join=True)


class chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) whose results, in order, go to one more task (the body)
    once every header task has succeeded — exactly once, counted in the database."""

    def __init__(self, header: Any, body: Signature | None = None, app: "Celery | None" = None,
                 **options: Any) -> None:
        header = header if isinstance(header, group) else group(*header, app=app)
        dict.__init__(self, task="celery.chord", args=(), kwargs={"header": header, "body": body},
                      options=options, subtask_type="chord", immutable=False)
        self._app = app or header._app or getattr(body, "_app", None)

    header = property(lambda self: self.kwargs["header"])
    body = property(lambda self: self.kwargs["body"])

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "chord":
        body = self.body.clone() if self.body is not None else None
        return chord(self.header.clone(args, kwargs), body, app=self._app, **{**self.options, **options})

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        sig = self.clone()
        if body is not None:
            sig.kwargs["body"] = body
        return sig.apply_async(**options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        header_result = self.header.apply(args, kwargs)
        result = self.body.apply((header_result.get(),))
        result.parent = header_result
        return result

    def link(self, callback: Signature) -> Signature:
        return self.body.link(callback)

    def link_error(self, errback: Signature) -> Signature:
        return self.body.link_error(errback)

    def plan(self, planner: "Planner", parked: bool) -> "Node":
        if self.body is None:
            raise ValueError("chord() needs a body: chord(header)(body) or chord(header, body)")
        header = self.header.plan(planner, parked)
        body = self.body.plan(planner, True)
        planner.connect(header, body)
        body.result.parent = header.result
        return Node(entries=header.entries, exits=body.exits, result=body.result,
                    first_result=header.result, join=body.join)


class _items_task(Signature):
    """Shared by xmap / xstarmap: one job applying a task to every item of a list."""

    builtin = ""

    def __init__(self, task: Signature, it: Iterable[Any], app: "Celery | None" = None, **options: Any) -> None:
        Signature.__init__(self, self.builtin, (), {"task": dict(task), "it": [list(i) if isinstance(i, tuple) else i
                                                                             for i in it]},
                           options, app=app or task._app, subtask_type=self.builtin.split(".")[-1])


class xmap(_items_task):  # noqa: N801 - Celery's name
    builtin = "celery.map"


class xstarmap(_items_task):  # noqa: N801 - Celery's name
    builtin = "celery.starmap"


class chunks(Signature):  # noqa: N801 - Celery's name
    """Split a long list of argument tuples into ``n``-sized starmap jobs."""

    def __init__(self, task: Signature, it: Iterable[Any], n: int, app: "Celery | None" = None, **options: Any) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"chunks() needs a chunk size >= 1, got {n!r}")
        Signature.__init__(self, "celery.chunks", (), {"task": dict(task), "it": list(it), "n": n}, options,
                           app=app or task._app, subtask_type="chunks")

    def group(self) -> group:
        task = Signature(self.kwargs["task"], app=self._app)
        items = iter(self.kwargs["it"])
        parts = iter(lambda: list(itertools.islice(items, self.kwargs["n"])), [])
        return group([xstarmap(task, part, app=self._app) for part in parts], app=self._app)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        return self.group().apply_async(args, kwargs, **options)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        return self.group().apply(args, kwargs, **options)

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def plan(self, planner: "Planner", parked: bool) -> "Node":
        return self.group().plan(planner, parked)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """Celery's ``signature()``: from a task name, a task, or a signature dict."""
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            return varies.clone()
        return _from_dict(varies, kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any, app: "Celery | None" = None) -> Signature | None:
    return None if d is None else as_signature(d, app)


def as_signature(d: Signature | Mapping[str, Any], app: "Celery | None" = None) -> Signature:
    """A signature, or one from its dict form (as links and chords travel in messages)."""
    return d if isinstance(d, Signature) else _from_dict(d, app)


def _from_dict(d: Mapping[str, Any], app: "Celery | None") -> Signature:
    kind = d.get("subtask_type")
    kwargs = d.get("kwargs") or {}
    if kind == "chain":
        return chain(*[_from_dict(t, app) for t in kwargs["tasks"]], app=app, **d.get("options", {}))
    if kind == "group":
        return group([_from_dict(t, app) for t in kwargs["tasks"]], app=app, **d.get("options", {}))
    if kind == "chord":
        return chord(_from_dict(kwargs["header"], app), _from_dict(kwargs["body"], app), app=app)
    return Signature(dict(d), app=app)


# --- what planning a canvas makes ---------------------------------------------------------------


@dataclasses.dataclass
class Node:
    """A planned piece of canvas: the jobs to release to start it, the jobs whose
    completion finishes it, and its result handle."""

    entries: list[Job]
    exits: list[Job]
    result: Any
    first_result: Any = None
    join: bool = False  # its exits' results go on as one list (a group)


# --- built-in tasks (run by any worker that imported chancy.compat) ------------------------------


def _apply_each(task: Mapping[str, Any], it: list[Any], star: bool) -> list[Any]:
    sig = _from_dict(task, app_with_task(task.get("task")))
    fn = sig.type
    return [fn(*item) if star else fn(item) for item in it]


def _builtin_map(task: Mapping[str, Any], it: list[Any]) -> list[Any]:
    return _apply_each(task, it, star=False)


def _builtin_starmap(task: Mapping[str, Any], it: list[Any]) -> list[Any]:
    return _apply_each(task, it, star=True)


registry["celery.map"] = _builtin_map
registry["celery.starmap"] = _builtin_starmap
