"""``task_routes``: which queue (and options) a task name goes to, as Celery resolves it —
a dict (exact names, ``*`` globs, compiled regexes), a router function, or a list of those,
first match wins."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
from typing import Any, Callable, Mapping, Sequence

Route = Callable[..., Any]


def _expand(route: Any) -> dict[str, Any] | None:
    if route is None:
        return None
    if isinstance(route, str):
        return {"queue": route}
    if isinstance(route, Mapping):
        return dict(route)
    raise TypeError(f"a task route must be a queue name or a dict of options, got {route!r}")


def _map_router(table: Mapping[Any, Any]) -> Route:
    exact: dict[str, Any] = {}
    patterns: list[tuple[re.Pattern[str], Any]] = []
    for key, target in table.items():
        if isinstance(key, re.Pattern):
            patterns.append((key, target))
        elif isinstance(key, str) and any(c in key for c in "*?["):
            patterns.append((re.compile(fnmatch.translate(key)), target))
        else:
            exact[key] = target

    def route(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in exact:
            return exact[name]
        return next((r for pattern, r in patterns if pattern.match(name)), None)

    return route


def _router(spec: Any) -> Route:
    if isinstance(spec, Mapping):
        return _map_router(spec)
    if isinstance(spec, str):
        module_name, _, attr = spec.rpartition(".")
        spec = getattr(importlib.import_module(module_name), attr)
    if isinstance(spec, type):
        spec = spec()
    if hasattr(spec, "route_for_task"):
        return spec.route_for_task
    if callable(spec):
        return spec
    raise TypeError(f"task_routes entry {spec!r} is neither a dict nor a router function")


def _takes_task(router: Route) -> bool:
    """Celery calls ``route(name, args, kwargs, options, task=task)``; older routers lack ``task``."""
    try:
        params = inspect.signature(router).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "task" or p.kind is p.VAR_KEYWORD for p in params)


def _with_task(router: Route) -> Route:
    """``router`` called as ``router(name, args, kwargs, options, task=task)`` (decided
    once here, not per call: inspecting a signature costs more than routing)."""
    if _takes_task(router):
        return router
    return lambda name, args, kwargs, options, task=None: router(name, args, kwargs, options)


def prepare(routes: Any) -> list[Route]:
    if routes is None:
        return []
    if isinstance(routes, (Mapping, str)) or callable(routes):
        routes = [routes]
    return [_with_task(_router(r)) for r in routes]


def route_for(routers: Sequence[Route], name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
              options: Mapping[str, Any], task: Any = None) -> dict[str, Any]:
    """The options of the first matching route ({} when none matches); ``routers`` as
    :func:`prepare` returns them."""
    for router in routers:
        found = router(name, args, kwargs, options, task=task)
        expanded = _expand(found)
        if expanded is not None:
            return expanded
    return {}
