"""Serving the dashboard on its own with uvicorn (``chancy dashboard``)."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from chancy.dashboard.auth import User
from chancy.errors import ConfigurationError

if TYPE_CHECKING:
    from chancy.app import Chancy

log = logging.getLogger("chancy.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    app: "Chancy",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    users: Mapping[str, User] | Iterable[User],
    forwarded_allow_ips: str = "",
    root_path: str = "",
    **options: Any,
) -> None:
    """Serve the dashboard of ``app`` until interrupted. Bound to localhost unless told
    otherwise; ``forwarded_allow_ips`` are the proxies (comma-separated addresses or
    networks) whose ``X-Forwarded-Proto`` and ``X-Forwarded-For`` are believed — none by
    default, since any local process could otherwise pose as a proxy and pick the address
    the login throttle counts against; ``root_path`` is the public path prefix a proxy
    strips (e.g. ``/chancy``). ``options`` go to :func:`create_app`."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            'The dashboard needs its optional dependencies: pip install "chancy[dashboard]"') from None
    from chancy.dashboard.app import create_app

    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port!r}")
    asgi = create_app(app, users, **options)
    if not _is_loopback(host):
        log.warning("The dashboard listens on %s, beyond this machine: put it behind a TLS proxy "
                    "(see docs/dashboard.md)", host)
    if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
        raise ConfigurationError(
            f"root_path must start with '/' and not end with one, e.g. '/chancy'; got {root_path!r}")
    # Without proxies, no proxy headers at all: uvicorn would otherwise fall back to
    # FORWARDED_ALLOW_IPS or 127.0.0.1.
    uvicorn.run(asgi, host=host, port=port, proxy_headers=bool(forwarded_allow_ips),
                forwarded_allow_ips=forwarded_allow_ips or None, root_path=root_path, server_header=False,
                log_level="info")
