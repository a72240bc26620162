"""How Chancy workers run the framework's tasks, without running arbitrary imports.

A job pushed by the backend names its task by module path (``shop.tasks.send_receipt``).
Every ``@task`` bound to a Chancy backend registers itself here when its module is
imported (the framework validates each Task on creation, and the backend registers it
then), and Django imports each installed app's ``tasks`` module when it starts
(``CHANCY['TASK_MODULES']``). A worker thus runs exactly the framework's tasks its project
defines: a job naming anything else fails as an unknown task. Around each call the task's
thread closes stale database connections, as Django does around a request, and the
framework's ``task_started`` / ``task_finished`` signals are sent."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from chancy import execution

from chancy.contrib.django.framework import Task, TaskContext, TaskResultStatus, normalize_json, task_finished, \
    task_started
from chancy.contrib.django.results import task_error, task_result

#: The framework's tasks this process knows, by the task name of their jobs.
tasks: dict[str, Task] = {}


def register(task: Task) -> None:
    """Make ``task`` runnable by this process's workers (the first Task of a function wins:
    ``task.using(...)`` variants run the same function)."""
    name = task.module_path
    if name in tasks and tasks[name].func is task.func:
        return
    tasks[name] = task
    execution.registry[name] = _runner(task)


def find(name: str) -> Task | None:
    """The task a job names. Not yet imported here (a web process reading a result), its
    module is imported only if it belongs to an installed app."""
    task = tasks.get(name)
    if task is None:
        module, _, _ = name.rpartition(".")
        from django.apps import apps

        if module and any(module == c.name or module.startswith(c.name + ".") for c in apps.get_app_configs()):
            try:
                importlib.import_module(module)
            except ImportError:
                return None
            task = tasks.get(name)
    return task


def _runner(task: Task) -> Callable[..., Any]:
    run = _async_runner(task) if inspect.iscoroutinefunction(task.func) else _sync_runner(task)
    # The process pool imports the module defining each registered function in its children.
    run.__module__, run.__name__, run.__qualname__ = task.func.__module__, task.func.__name__, task.func.__qualname__
    return run


def _async_runner(task: Task) -> Callable[..., Any]:
    """A coroutine function: the asyncio pool awaits it on its loop (others in a loop of
    their own)."""
    async def run(*args: Any, **kwargs: Any) -> Any:
        result = _started(task)
        try:
            value = normalize_json(await task.func(*_context(task, result), *args, **kwargs))
        except BaseException as exc:
            _finished(result, exc=exc)
            raise
        return _finished(result, value)

    return run


def _sync_runner(task: Task) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        from django.db import close_old_connections

        close_old_connections()
        result = _started(task)
        try:
            value = normalize_json(task.func(*_context(task, result), *args, **kwargs))
        except BaseException as exc:
            _finished(result, exc=exc)
            raise
        finally:
            close_old_connections()
        return _finished(result, value)

    return run


def _started(task: Task) -> Any:
    result = task_result(execution.current_job.get(), task)
    task_started.send(type(task.get_backend()), task_result=result)
    return result


def _context(task: Task, result: Any) -> tuple[Any, ...]:
    return (TaskContext(task_result=result),) if task.takes_context else ()


def _finished(result: Any, value: Any = None, exc: BaseException | None = None) -> Any:
    """Send ``task_finished`` with the outcome; ``value`` is returned to be stored."""
    from django.utils import timezone

    object.__setattr__(result, "finished_at", timezone.now())
    if exc is None:
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "_return_value", value)
    else:
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        result.errors.append(task_error(exc))
    task_finished.send(type(result.task.get_backend()), task_result=result)
    return value
