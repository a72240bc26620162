"""The Chancy dashboard: an operations console (HTML), a JSON API and Prometheus metrics,
served from one ASGI app behind a login. Needs ``pip install "chancy[dashboard]"``.

``create_app(chancy, users)`` gives the ASGI app (mount it anywhere);
``serve(chancy, host, port, users=...)`` runs it with uvicorn."""

from typing import Any

from chancy.dashboard.auth import Role, User, hash_password, load_users, parse_users
from chancy.dashboard.server import serve


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`chancy.dashboard.app.create_app` (imported lazily: it needs Starlette)."""
    from chancy.dashboard.app import create_app as create

    return create(*args, **kwargs)


__all__ = ["Role", "User", "create_app", "hash_password", "load_users", "parse_users", "serve"]
