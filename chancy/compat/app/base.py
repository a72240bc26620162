"""``Celery``: the app object of a Celery codebase, backed by a :class:`chancy.Chancy`
(exposed as ``.chancy``). It owns configuration, the task registry, routing, and turning
calls (signatures) into job rows."""

from __future__ import annotations

import importlib
import logging
import operator
import os
import sys
import threading
import warnings
from datetime import datetime
from typing import Any, Callable, Concatenate, Literal, Mapping, ParamSpec, Sequence, TypeVar, overload

from chancy.app import Chancy
import chancy.compat.continuations as continuations
import chancy.compat.django_fixup as django_fixup
import chancy.compat.local as local
import chancy.compat.rate_limits as rate_limits
import chancy.compat.signals as signals
import chancy.compat.transactions as transactions
from chancy.compat.app.task import Task
from chancy.compat.canvas import Signature, signature
from chancy.compat.command_line import run_program
from chancy.compat.config import Settings
from chancy.compat.exceptions import ImproperlyConfigured
from chancy.compat.job_rows import jobs_and_result
from chancy.compat.local import Proxy, get_current_app, set_current_app
from chancy.compat.protocol import job_id_for
from chancy.compat.result import AsyncResult, GroupResult
from chancy.compat.stamps import stamped_task_ids
from chancy.compat.worker import cluster_plugins
from chancy.errors import ConfigurationError
from chancy.execution import registry
from chancy.job import new_job_id
from chancy.queues.pg import Queue

log = logging.getLogger("chancy.compat")
P = ParamSpec("P")
R = TypeVar("R")
#: The task class, by a name ``Celery``'s own ``Task`` property does not shadow.
TaskOf = Task

POSTGRES_SCHEMES = ("postgresql://", "postgres://", "chancy+postgresql://", "chancy+postgres://")
_shared_tasks: list[Callable[["Celery"], Any]] = []


def gen_task_name(app: "Celery", name: str, module_name: str | None) -> str:
    """Celery's naming: ``module.function``; a task defined in ``__main__`` takes the app's
    ``main`` name as its module so the worker can find it — also when the main script is
    run again as ``__mp_main__``, as multiprocessing does in a process-pool child."""
    module_name = module_name or "__main__"
    module = sys.modules.get(module_name)
    if module is not None:
        module_name = module.__name__
    if module_name in ("__main__", "__mp_main__") and app.main:
        return f"{app.main}.{name}"
    return ".".join(p for p in (module_name, name) if p)


class Control:
    """``app.control``: revoke and purge, durable because they act on job rows."""

    def __init__(self, app: "Celery") -> None:
        self.app = app

    def revoke(self, task_id: str | Sequence[str], destination: Any = None, terminate: bool = False,
               signal: Any = None, **kwargs: Any) -> None:
        """Revoke waiting tasks (works with no worker running); ``terminate=True`` also stops
        a running one. Without it a running task finishes, as in Celery."""
        from chancy.job import JobState

        chancy = self.app.chancy
        for one in [task_id] if isinstance(task_id, str) else list(task_id):
            job_id = job_id_for(one)
            record = chancy.get_job_sync(job_id)
            if record is None:
                log.warning("revoke: no task %s (never sent, or forgotten)", one)
                continue
            if record.state is JobState.RUNNING and not terminate:
                continue
            if self._cancel_with_dependants(job_id, record.meta.get("canvas") or {}):
                signals.task_revoked.send(sender=self.app.tasks.get(record.func), request=None,
                                          terminated=terminate, signum=signal, expired=False)

    def _cancel_with_dependants(self, job_id: Any, canvas: dict[str, Any]) -> bool:
        """Cancel the job and, in the same transaction, the workflow steps waiting on it."""
        from chancy.store.pg.celery_canvas import cancel_with_dependants_sync

        chancy = self.app.chancy
        return cancel_with_dependants_sync(chancy.store, chancy.store.jobs.cancel(job_id), canvas)

    def revoke_by_stamped_headers(self, headers: Mapping[str, Any], destination: Any = None, terminate: bool = False,
                                  signal: Any = None, **kwargs: Any) -> None:
        """Revoke the waiting tasks stamped with one of these values (``{header: value or
        [values]}``); ``terminate=True`` also stops running ones. Tasks sent later are not
        affected (Celery's workers remember the stamps; rows are revoked as found now)."""
        self.revoke(stamped_task_ids(self.app.chancy, headers, running=terminate), terminate=terminate, signal=signal)

    def terminate(self, task_id: str | Sequence[str], destination: Any = None, signal: Any = None,
                  **kwargs: Any) -> None:
        self.revoke(task_id, terminate=True, signal=signal)

    def purge(self) -> int:
        """Delete every waiting task of the app's queues; returns how many."""
        from chancy.job import JobState

        store = self.app.chancy.store
        waiting = [JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING]
        purge = store.admin.purge(waiting, list(self.app.chancy.queues))
        return sum(store.run_sync(purge).values())

    discard_all = purge


class Celery:
    """A Celery application whose broker and result backend are one Postgres database."""

    def __init__(self, main: str | None = None, loader: Any = None, backend: str | None = None,
                 amqp: Any = None, events: Any = None, log: Any = None, control: Any = None,
                 set_as_current: bool = True, tasks: Any = None, broker: str | None = None,
                 include: Sequence[str] | None = None, changes: Mapping[str, Any] | None = None,
                 config_source: Any = None, fixups: Any = None, task_cls: Any = None,
                 autofinalize: bool = True, namespace: str | None = None, strict_typing: bool = True,
                 **kwargs: Any) -> None:
        self.main = main
        self.conf = Settings()
        self.tasks: dict[str, Task] = {}
        self.control = Control(self)
        self.on_configure = signals.Signal("on_configure")
        self.on_after_configure = signals.Signal("on_after_configure")
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._chancy: Chancy | None = None
        self._chancy_lock = threading.RLock()
        self._pending_sources: list[tuple[Any, str | None]] = []
        self._autodiscover: list[tuple[Any, str]] = []
        self._periodic: list[tuple[Any, Any, dict[str, Any]]] = []
        self.finalized = False
        self._base_task = task_cls if isinstance(task_cls, type) else Task
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = tuple(include)
        if changes:
            self.conf.update(changes)
        if kwargs:
            self.conf.update(kwargs)
        if config_source is not None:
            self.config_from_object(config_source)
        if set_as_current:
            set_current_app(self)
        local.apps.append(self)
        for make in _shared_tasks:
            make(self)

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    # --- configuration ------------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Load settings from a module path, ``'module:attr'`` (e.g.
        ``'django.conf:settings'`` with ``namespace='CELERY'``) or an object."""
        try:
            self.conf.from_object(obj, namespace=namespace)
        except ImportError:
            if silent:
                return
            raise

    def config_from_envvar(self, variable_name: str, silent: bool = False, force: bool = False) -> None:
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return
            raise ImproperlyConfigured(f"The environment variable {variable_name!r} is not set")
        self.config_from_object(module_name, silent=silent)

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks", force: bool = False) -> None:
        """Import ``<package>.tasks`` for each package (default: Django's INSTALLED_APPS),
        now when ``force``, else when the app is finalized."""
        self._autodiscover.append((packages, related_name))
        if force or self.finalized:
            self._discover(packages, related_name)

    def _discover(self, packages: Any, related_name: str) -> None:
        if callable(packages):
            packages = packages()
        if packages is None:
            packages = django_fixup.installed_packages()
        for package in packages:
            try:
                importlib.import_module(f"{package}.{related_name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{related_name}":
                    raise

    def finalize(self, auto: bool = False) -> None:
        """Import ``include``/``imports``, discover tasks, apply annotations and send
        ``on_after_configure`` / ``on_after_finalize`` (once)."""
        if self.finalized:
            return
        self.finalized = True
        self.on_configure.send(sender=self)
        django_fixup.setup_django()  # task modules import models: Django first, as Celery's fixup does
        for module in tuple(self.conf.include or ()) + tuple(self.conf.imports or ()):
            importlib.import_module(module)
        for packages, related_name in self._autodiscover:
            self._discover(packages, related_name)
        self.on_after_configure.send(sender=self, source=self.conf)
        for task in self.tasks.values():
            self._annotate(task)
        self.on_after_finalize.send(sender=self)

    def _annotate(self, task: Task) -> None:
        annotations = self.conf.task_annotations
        if not annotations:
            return
        for table in annotations if isinstance(annotations, (list, tuple)) else [annotations]:
            if callable(table) and not isinstance(table, Mapping):
                table = table(task) or {}
            for key in ("*", task.name):
                for attr, value in (table.get(key) or {}).items():
                    setattr(task, attr, value)

    # --- the core app -------------------------------------------------------------------------
    @property
    def dsn(self) -> str | None:
        url = self.conf.broker_url
        if not url:
            return None
        if not url.startswith(POSTGRES_SCHEMES):
            raise ConfigurationError(
                f"broker_url {url!r} is not a Postgres DSN. chancy.compat keeps tasks in Postgres: use "
                "'postgresql://user:password@host:5432/dbname' (or leave it unset to use CHANCY_DSN "
                "or the embedded server). To keep a stock Celery worker on another broker, use the "
                "kombu transport instead (see migration_guide.md).")
        backend = self.conf.result_backend
        if backend and not str(backend).startswith(POSTGRES_SCHEMES + ("chancy",)):
            warnings.warn(f"result_backend {backend!r} is ignored: results are stored in the job rows "
                          "of the broker database", UserWarning, stacklevel=3)
        return url

    def declared_queues(self) -> list[str]:
        names = [self.conf.task_default_queue]
        for queue in self.conf.task_queues or ():
            name = queue if isinstance(queue, str) else getattr(queue, "name", None)
            if name and name not in names:
                names.append(name)
        return names

    @property
    def chancy(self) -> Chancy:
        """The :class:`chancy.Chancy` app behind this Celery app (built on first use)."""
        with self._chancy_lock:  # web threads may all call .delay() first at once
            if self._chancy is None:
                self.finalize()
                options = self.conf.broker_transport_options or {}
                self._chancy = Chancy(self.dsn, plugins=[*(Queue(name) for name in self.declared_queues()),
                                                         *cluster_plugins(self)],
                                      session_dsn=options.get("session_url"))
                self._chancy.hooks.on_completion(continuations.continue_canvas)
                self._chancy.hooks.on_rate_limits(lambda: rate_limits.limits_of(self))
            return self._chancy

    # --- tasks ---------------------------------------------------------------------------------
    @property
    def Task(self) -> type[Task]:  # noqa: N802 - Celery's name
        return type("Task", (self._base_task,), {"app": self, "__module__": self._base_task.__module__,
                                                 "abstract": True})

    # The task keeps the function's parameter types (without the bound ``self``).
    @overload
    def task(self, fun: Callable[P, R], /) -> TaskOf[P, R]: ...

    @overload
    def task(
        self, *, bind: Literal[True], **opts: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], TaskOf[P, R]]: ...

    @overload
    def task(self, *, bind: Literal[False] = False, **opts: Any) -> Callable[[Callable[P, R]], TaskOf[P, R]]: ...

    def task(self, *args: Any, **opts: Any) -> Any:
        """``@app.task`` or ``@app.task(name=…, bind=True, base=…, max_retries=…, …)``."""
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("@app.task takes keyword options only, e.g. @app.task(bind=True)")
        return lambda fun: self._task_from_fun(fun, **opts)

    def _task_from_fun(self, fun: Callable[..., Any], name: str | None = None, base: type | None = None,
                       bind: bool = False, **options: Any) -> TaskOf:
        name = name or gen_task_name(self, fun.__name__, fun.__module__)
        existing = self.tasks.get(name)
        if existing is not None and getattr(existing, "__wrapped__", None) is fun:
            return existing
        base = base or self._base_task
        rate_limits.check(name, options.get("rate_limit"))
        run = fun if bind else staticmethod(fun)
        attrs = {"app": self, "name": name, "run": run, "__wrapped__": fun, "__doc__": fun.__doc__,
                 "__module__": fun.__module__, "__qualname__": fun.__name__, "_decorated": True,
                 "abstract": False, **options}
        task = type(fun.__name__, (base,), attrs)()
        self.tasks[name] = task
        registry[name] = task.run_from_worker
        if self.finalized:
            self._annotate(task)
        return task

    def register_task(self, task: Any) -> TaskOf:
        """Register a class-based task (an instance of a ``Task`` subclass with ``run``)."""
        if isinstance(task, type):
            task = task()
        if task.name is None:
            task.name = gen_task_name(self, type(task).__name__, type(task).__module__)
        task.app = self
        rate_limits.check(task.name, task.rate_limit)
        self.tasks[task.name] = task
        registry[task.name] = task.run_from_worker
        return task

    def new_task_id(self) -> str:
        """A time-ordered UUID, so tasks of one priority run first in, first out."""
        return str(new_job_id())

    # --- calling ---------------------------------------------------------------------------------
    def signature(self, *args: Any, **kwargs: Any) -> Any:
        return signature(*args, app=self, **kwargs)

    def send_task(self, name: str, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                  countdown: float | None = None, eta: datetime | None = None, task_id: str | None = None,
                  **options: Any) -> Any:
        """Enqueue a task by name (it need not be importable here); never eager."""
        for key, value in (("countdown", countdown), ("eta", eta), ("task_id", task_id)):
            if value is not None:
                options[key] = value
        connection = options.pop("connection", None)
        return self.publish(Signature(name, args, kwargs, options, app=self), connection=connection)

    def publish(self, sig: Any, connection: Any = None, on_commit: bool = False) -> Any:
        """Insert the jobs of a signature or canvas (in the caller's transaction, see
        :mod:`chancy.compat.transactions`); returns its result handle."""
        jobs, result = jobs_and_result(self, sig)
        sent = signals.send_before_publish(jobs)
        transactions.push(self.chancy, [job for job, _ in sent], connection=connection, on_commit=on_commit)
        signals.send_after_publish(sent)
        return result

    # --- results --------------------------------------------------------------------------------
    def AsyncResult(self, id: str, **kwargs: Any) -> Any:  # noqa: N802 - Celery's name
        return AsyncResult(id, app=self, **kwargs)

    def GroupResult(self, id: str | None = None, results: Sequence[Any] | None = None, **kwargs: Any) -> Any:  # noqa: N802
        return GroupResult(id, results, app=self, **kwargs)

    # --- beat -----------------------------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Sequence[Any] = (),
                          kwargs: Mapping[str, Any] | None = None, name: str | None = None, **opts: Any) -> str:
        """Add a ``beat_schedule`` entry; the cluster's cron runs it (no beat process)."""
        if not isinstance(sig, Signature):
            sig = Signature(sig, args, dict(kwargs or {}), app=self)
        key = name or repr(sig)
        entries = dict(self.conf.beat_schedule or {})
        entries[key] = {"schedule": schedule, "task": sig.task, "args": sig.args, "kwargs": sig.kwargs,
                        "options": {**sig.options, **opts}}
        self.conf.beat_schedule = entries
        return key

    # --- misc -------------------------------------------------------------------------------------
    def _rgetattr(self, path: str) -> Any:
        """A dotted attribute: how celery's old module names (``celery.registry.tasks``) reach
        the current app, which is this one when celery has none of its own."""
        return operator.attrgetter(path)(self)

    def set_current(self) -> None:
        set_current_app(self)

    def set_default(self) -> None:
        set_current_app(self)

    def close(self) -> None:
        """Close the sync connections; the next use reconnects with the current settings."""
        if self._chancy is not None:
            self._chancy.close_sync()
            self._chancy = None

    def start(self, argv: Sequence[str] | None = None) -> int:
        """Run a ``chancy`` command for this app, ``argv`` (default: this script's
        arguments, e.g. ``python tasks.py worker -l INFO``): Celery's ``app.start()``.
        Returns 0 once a command succeeded; any other exit code ends the process."""
        return run_program(self, sys.argv[1:] if argv is None else argv)

    def worker_main(self, argv: Sequence[str] | None = None) -> int:
        """Run a worker for this app: ``app.worker_main(["worker", "--loglevel=INFO"])``."""
        argv = sys.argv[1:] if argv is None else argv
        if "worker" not in argv:
            raise ValueError("The worker sub-command must be specified in argv, e.g. app.worker_main(['worker']); "
                             "use app.start() to run other commands.")
        return self.start(argv)

    def __enter__(self) -> "Celery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _default_app() -> Celery:
    """The app ``current_app`` stands for when none was made yet, as Celery's default app."""
    return Celery("default")


local.make_default_app = _default_app


@overload
def shared_task(fun: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(*, bind: Literal[True], **opts: Any) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...


@overload
def shared_task(*, bind: Literal[False] = False, **opts: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(*args: Any, **opts: Any) -> Any:
    """``@shared_task``: a task for every app (a library does not know the app). It is
    registered with each Celery app created, and calls go to the current app."""

    def create(fun: Callable[..., Any]) -> Any:
        name = opts.get("name")

        def register(app: Celery) -> Task:
            return app._task_from_fun(fun, **opts)

        _shared_tasks.append(register)
        for app in list(local.apps):
            register(app)

        def current() -> Task:
            app = get_current_app()
            task_name = name or gen_task_name(app, fun.__name__, fun.__module__)
            return app.tasks.get(task_name) or register(app)

        return Proxy(current)

    if len(args) == 1 and callable(args[0]) and not opts:
        return create(args[0])
    return create
