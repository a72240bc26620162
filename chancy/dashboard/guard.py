"""The ASGI middleware in front of every route: nothing but the login page and static
assets without a user; no state change from another site; security headers on every
response.

Identification: the session cookie, or HTTP Basic credentials on read-only requests to
``/metrics`` and ``/api`` (for Prometheus and scripts). Basic credentials never authorise
a state change: browsers replay them on their own, which is exactly what CSRF exploits."""

from __future__ import annotations

import base64
import binascii
import json
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit

from chancy.dashboard.auth import Authenticator, Session, Throttled

SESSION_COOKIE = "chancy_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = ("/login", "/api/login", "/static/")
BASIC_PATHS = ("/metrics", "/api/")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def route_path(scope: dict) -> str:
    """The path within the dashboard (without the prefix it is mounted under)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def client_address(scope: Mapping[str, Any]) -> str:
    """The client's address as the server resolved it: the peer's, or the one a configured
    proxy forwarded (uvicorn believes ``X-Forwarded-For`` only from ``forwarded_allow_ips``)."""
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def session_token(headers: dict[str, str]) -> str | None:
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header identifies nobody
        return None
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def cross_site_reason(method: str, headers: dict[str, str], allowed_origins: Iterable[str]) -> str | None:
    """Why an unsafe request looks like it came from another site (None: it did not)."""
    if method in SAFE_METHODS:
        return None
    if headers.get("sec-fetch-site") == "cross-site":
        return "the browser marked it cross-site"
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    allowed = {host, *allowed_origins}
    for header in ("origin", "referer"):
        value = headers.get(header)
        if value:
            netloc = urlsplit(value).netloc
            if value == "null" or netloc not in allowed:
                return f"its {header.title()} ({value[:80]}) is not this dashboard ({host})"
            return None
    return None


class Guard:
    def __init__(self, app: ASGIApp, auth: Authenticator, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.auth = auth
        self.allowed_origins = tuple(urlsplit(o).netloc or o for o in allowed_origins)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # the dashboard has none; refuse before any route sees it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return

        async def secured_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": list(message.get("headers", []))
                           + [h for h in SECURITY_HEADERS if h[0] not in names]}
            await send(message)

        path, method, headers = route_path(scope), scope["method"], _headers(scope)
        reason = cross_site_reason(method, headers, self.allowed_origins)
        if reason:
            await _respond(scope, secured_send, 403, f"Refused a cross-site request: {reason}.")
            return
        session = self.auth.sessions.get(session_token(headers))
        if session is None and method in SAFE_METHODS and path.startswith(BASIC_PATHS):
            try:
                session = self._basic(headers, client_address(scope))
            except Throttled as exc:
                await _respond(scope, secured_send, 429, str(exc),
                               [(b"retry-after", str(round(exc.retry_after)).encode())])
                return
        scope.setdefault("state", {})["session"] = session
        if session is None and not path.startswith(PUBLIC_PATHS):
            if path.startswith(BASIC_PATHS):
                await _respond(scope, secured_send, 401, "Log in first (POST /api/login, or HTTP Basic for reads).",
                               [(b"www-authenticate", b'Basic realm="chancy", charset="UTF-8"')])
            else:
                target = (scope.get("root_path", "") + path) + ("?" + scope["query_string"].decode("latin-1")
                                                               if scope.get("query_string") else "")
                location = scope.get("root_path", "") + "/login?next=" + quote(target, safe="")
                await _respond(scope, secured_send, 303, "", [(b"location", location.encode())])
            return
        await self.app(scope, receive, secured_send)

    def _basic(self, headers: dict[str, str], client: str) -> Session | None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = self.auth.login(name, password, client)
        return None if user is None else Session(user, csrf_token="", created=0.0, last_used=0.0)


async def _respond(scope: dict, send: Any, status: int, text: str,
                   extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    is_api = route_path(scope).startswith(("/api/", "/metrics"))
    body = json.dumps({"error": text}).encode() if is_api else text.encode()
    content_type = b"application/json" if is_api else b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
