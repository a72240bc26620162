"""``current_app`` and ``current_task``: proxies to the app in use and the task running
in this thread, as Celery's are. This module holds that per-process and per-thread state
and imports no other part of the layer, so every part can ask it who is current."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from chancy.compat.app.base import Celery
    from chancy.compat.app.task import Context, Task

_state = threading.local()
_default: list["Celery"] = []
#: Every app made in this process, oldest first.
apps: list["Celery"] = []
#: Makes the app that stands in when none was made yet (Celery's default app). Set by
#: :mod:`chancy.compat.app.base`, which defines the app class and imports this module;
#: importing anything of ``chancy.compat`` loads it first.
make_default_app: Callable[[], "Celery"] | None = None


def app_with_task(name: str | None) -> "Celery":
    """The app that has task ``name``: the current one if it does, else the latest made
    that does (a process may hold several apps; a built-in such as ``celery.map`` is
    shared by all of them), else the current one."""
    current = get_current_app()
    if name is None or name in current.tasks:
        return current
    return next((app for app in reversed(apps) if name in app.tasks), current)


def set_current_app(app: "Celery") -> None:
    _state.app = app
    if not _default:
        _default.append(app)
    _current_for_celery(app)


def _current_for_celery(app: "Celery") -> None:
    """With celery installed, integrations find a task by name through celery's current app
    (``celery.registry.tasks``, e.g. OpenTelemetry's and Datadog's publish hooks): unless
    a real Celery app is celery's default, ours — the current one — is."""
    try:
        from celery import _state as celery_state
    except ImportError:
        return
    if celery_state.default_app is None or type(celery_state.default_app) is type(app):
        celery_state.set_default_app(app)


def get_current_app() -> "Celery":
    app = getattr(_state, "app", None) or (_default[0] if _default else None)
    if app is None:
        assert make_default_app is not None, "chancy.compat.app.base sets it when loaded"
        app = make_default_app()
    return app


# --- the task running in this thread ------------------------------------------------------


class _RequestStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[tuple["Task", "Context"]] = []


_requests = _RequestStack()


def current_task_and_request() -> tuple["Task", "Context"] | None:
    return _requests.stack[-1] if _requests.stack else None


def request_of(task: "Task") -> "Context | None":
    """The request of ``task``'s innermost call running in this thread, if any."""
    for running_task, request in reversed(_requests.stack):
        if running_task is task:
            return request
    return None


class running:  # noqa: N801 - used as a function: ``with running(task, request):``
    """Push ``(task, request)`` for the duration of a call (inline, eager or worker)."""

    def __init__(self, task: "Task", request: "Context") -> None:
        self.entry = (task, request)

    def __enter__(self) -> "Context":
        _requests.stack.append(self.entry)
        return self.entry[1]

    def __exit__(self, *exc: object) -> None:
        _requests.stack.pop()


def get_current_task() -> Any:
    running_now = current_task_and_request()
    return running_now[0] if running_now else None


class Proxy:
    """Forwards everything to what ``getter()`` returns at the time of use."""

    __slots__ = ("_getter",)

    def __init__(self, getter: Callable[[], Any]) -> None:
        object.__setattr__(self, "_getter", getter)

    def _get_current_object(self) -> Any:
        return self._getter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._getter(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._getter(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._getter()(*args, **kwargs)

    def __bool__(self) -> bool:
        return bool(self._getter())

    def __eq__(self, other: object) -> bool:
        return self._getter() == other

    def __hash__(self) -> int:
        return hash(self._getter())

    def __repr__(self) -> str:
        return repr(self._getter())


current_app: Any = Proxy(get_current_app)
current_task: Any = Proxy(get_current_task)
