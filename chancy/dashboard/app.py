"""The dashboard as an ASGI application: HTML pages, a JSON API under ``/api`` and
Prometheus metrics at ``/metrics``, all behind :class:`~chancy.dashboard.guard.Guard`.

Mount it into another ASGI app under a prefix (``Mount("/chancy", create_app(...))``) or
serve it alone with :func:`chancy.dashboard.serve`."""

from __future__ import annotations

import contextlib
import hmac
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qsl

import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chancy.dashboard.views import Pages, safe_next
from chancy.dashboard.auth import Authenticator, Session, Throttled, User
from chancy.dashboard.console import Conflict, Console, NotFound
from chancy.dashboard.filters import (
    MAX_INTEGER, MAX_SECONDS, BadRequest, BulkRequest, JobFilter, parse_job_id, positive_number, text,
)
from chancy.dashboard.guard import SESSION_COOKIE, Guard, client_address
from chancy.dashboard.metrics import CONTENT_TYPE, Metrics
from chancy.errors import ConfigurationError, DatabaseUnavailableError
from chancy.store.admin import BulkAction, BulkRefused

if TYPE_CHECKING:
    from chancy.app import Chancy

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024

#: A route's handler, as Starlette calls it.
Endpoint = Callable[[Request], Awaitable[Response]]
#: A form's or API call's action: does it with the request's input, returns the message to show.
Action = Callable[[Request, dict[str, Any]], Awaitable[str]]


class Forbidden(PermissionError):
    """The user may look but not act (or the request lacks its CSRF token)."""


#: Errors a request can meet in normal operation, and the HTTP status each one means.
#: Anything else is a bug and surfaces as a 500.
STATUS = (
    (BadRequest, 400), (BulkRefused, 400), (ConfigurationError, 400), (Forbidden, 403), (NotFound, 404),
    (Conflict, 409), (DatabaseUnavailableError, 503), (psycopg.OperationalError, 503),
)
EXPECTED = tuple(kind for kind, _ in STATUS)


def status_of(exc: BaseException) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ApiResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_json_default, separators=(",", ":")).encode()


def create_app(
    chancy: "Chancy",
    users: Mapping[str, User] | Iterable[User],
    *,
    secure_cookies: bool | None = None,
    allowed_origins: Iterable[str] = (),
    refresh_seconds: float = 3.0,
    commit_lag: float = 5.0,
) -> Starlette:
    """The dashboard for ``chancy``.

    ``users``: who may log in (at least one). ``secure_cookies``: mark the session cookie
    ``Secure`` always (True), never (False) or when the request arrived over HTTPS (None;
    behind a TLS proxy, let the server trust its ``X-Forwarded-Proto``).
    ``allowed_origins``: other origins whose forms may post here (normally none).
    ``refresh_seconds``: how often open pages update themselves (0: never).
    ``commit_lag``: how long after its ``completed_at`` a finished job is surely committed;
    counts of finished jobs older than that are kept instead of read again."""
    if refresh_seconds < 0:
        raise ConfigurationError(f"refresh_seconds must be >= 0, got {refresh_seconds!r}")
    auth = Authenticator(users)
    console = Console(chancy, history_lag=commit_lag)
    metrics = Metrics(chancy, console, lag=commit_lag)
    pages = Pages(HERE / "templates", refresh_seconds)

    # --- plumbing -----------------------------------------------------------------------------
    def session_of(request: Request) -> Session | None:
        return request.scope.get("state", {}).get("session")

    async def read_input(request: Request) -> dict[str, Any]:
        body = b""
        async for chunk in request.stream():  # read no further than the limit
            body += chunk
            if len(body) > MAX_BODY:
                raise BadRequest(f"The request body is larger than {MAX_BODY} bytes")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise BadRequest("The request body is not valid JSON") from None
            if not isinstance(data, dict):
                raise BadRequest("The request body must be a JSON object")
            return data
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        form: dict[str, Any] = dict(pairs)
        if "ids" in form:  # the one repeated field: the jobs ticked for a bulk action
            form["ids"] = [value for name, value in pairs if name == "ids"]
        return form

    def check_csrf(request: Request, data: dict[str, Any]) -> Session:
        session = session_of(request)
        token = request.headers.get("x-csrf-token") or str(data.get("csrf_token", ""))
        if session is None or not session.csrf_token or \
                not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), session.csrf_token.encode()):
            raise Forbidden("Missing or wrong CSRF token: reload the page and try again")
        return session

    async def action_input(request: Request) -> dict[str, Any]:
        """The input of a state-changing request, once its session, role and CSRF token
        have been checked: the only way an action endpoint gets its parameters."""
        data = await read_input(request)
        session = check_csrf(request, data)
        if not session.user.can_operate:
            raise Forbidden(f"User {session.user.name!r} may view but not change jobs or queues (role viewer)")
        return data

    def api(handler: Callable[[Request], Awaitable[Any]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return ApiResponse(await handler(request))
            except EXPECTED as exc:
                return ApiResponse({"error": str(exc).strip()}, status_code=status_of(exc))
        return endpoint

    def page(template: str, load: Callable[[Request], Awaitable[dict[str, Any]]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                data, status = await load(request), 200
            except EXPECTED as exc:
                data, status = {"error": str(exc).strip()}, status_of(exc)
            return pages.render(request, session_of(request), template, data, status)
        return endpoint

    def form_action(run: Action) -> Endpoint:
        """An HTML form's action: do it, note the outcome, redirect back (post/redirect/get)."""
        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            back = request.scope.get("root_path", "") + "/"
            try:
                data = await action_input(request)
                back = safe_next(request, str(data.get("next", "")))
                message, kind = await run(request, data), "ok"
            except Forbidden as exc:
                return pages.render(request, session, "error.html", {"error": str(exc)}, 403)
            except EXPECTED as exc:
                message, kind = str(exc).strip(), "error"
            if session is not None:
                session.notices.append((kind, message))
            return RedirectResponse(back, status_code=303)
        return endpoint

    # --- login --------------------------------------------------------------------------------
    def login_user(request: Request, name: str, password: str) -> tuple[str, Session]:
        try:
            user = auth.login(name, password, client_address(request.scope))
        except Throttled as exc:
            raise Forbidden(str(exc)) from None
        if user is None:
            raise Forbidden("Wrong user name or password")
        return auth.sessions.create(user)

    def with_cookie(response: Response, request: Request, token: str) -> Response:
        secure = request.url.scheme == "https" if secure_cookies is None else secure_cookies
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure,
                            path=(request.scope.get("root_path", "") or "") + "/")
        return response

    async def login_page(request: Request) -> Response:
        return pages.render(request, None, "login.html", {"next": request.query_params.get("next", "")})

    async def login_form(request: Request) -> Response:
        data: dict[str, Any] = {}
        try:
            data = await read_input(request)
            token, _ = login_user(request, str(data.get("username", "")), str(data.get("password", "")))
        except (Forbidden, BadRequest) as exc:
            status = 400 if isinstance(exc, BadRequest) else 401
            return pages.render(request, None, "login.html", {"error": str(exc), "next": data.get("next", "")}, status)
        return with_cookie(RedirectResponse(safe_next(request, str(data.get("next", ""))), 303), request, token)

    async def api_login(request: Request) -> Response:
        try:
            data = await read_input(request)
            token, session = login_user(request, str(data.get("username", "")), str(data.get("password", "")))
        except BadRequest as exc:
            return ApiResponse({"error": str(exc)}, status_code=400)
        except Forbidden as exc:
            return ApiResponse({"error": str(exc)}, status_code=401)
        body = {"user": session.user.name, "role": session.user.role.value, "csrf_token": session.csrf_token}
        return with_cookie(ApiResponse(body), request, token)

    async def logout(request: Request) -> Response:
        try:
            check_csrf(request, await read_input(request))
        except (Forbidden, BadRequest) as exc:
            return pages.render(request, session_of(request), "error.html", {"error": str(exc)}, 403)
        auth.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(request.scope.get("root_path", "") + "/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=(request.scope.get("root_path", "") or "") + "/")
        return response

    # --- reads --------------------------------------------------------------------------------
    async def overview(request: Request) -> dict[str, Any]:
        return await console.overview()

    async def queues(request: Request) -> dict[str, Any]:
        return {"queues": await console.queues()}

    async def jobs(request: Request) -> dict[str, Any]:
        return await console.jobs(JobFilter.from_query(request.query_params))

    async def job(request: Request) -> dict[str, Any]:
        return await console.job(parse_job_id(request.path_params["job_id"]))

    async def canvas(request: Request) -> dict[str, Any]:
        return await console.canvas(parse_job_id(request.path_params["job_id"]))

    async def workers(request: Request) -> dict[str, Any]:
        return await console.workers()

    async def schedules(request: Request) -> dict[str, Any]:
        return await console.schedules()

    async def session_info(request: Request) -> dict[str, Any]:
        session = session_of(request)
        assert session is not None  # the guard lets no anonymous request through
        return {"user": session.user.name, "role": session.user.role.value, "csrf_token": session.csrf_token or None}

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    # --- actions --------------------------------------------------------------------------------
    job_actions = {"retry": console.retry, "cancel": console.cancel, "delete": console.delete}

    def job_action(action: str) -> Action:
        run = job_actions[action]
        done = {"retry": "queued to run again", "cancel": "cancelled", "delete": "deleted"}[action]

        async def act(request: Request, data: dict[str, Any]) -> str:
            job_id = parse_job_id(request.path_params["job_id"])
            await run(job_id)
            return f"Job {job_id} {done}"
        return act

    bulk_done = {BulkAction.RETRY: "Retried", BulkAction.CANCEL: "Cancelled", BulkAction.DELETE: "Deleted"}

    async def bulk_api(request: Request) -> dict[str, Any]:
        bulk = BulkRequest.parse(request.path_params["action"], await action_input(request))
        count = await console.bulk(bulk.action, bulk.selection, dry_run=bulk.dry_run, force=bulk.force)
        message = (f"{count} job(s) would be {bulk_done[bulk.action].lower()}" if bulk.dry_run
                   else f"{bulk_done[bulk.action]} {count} job(s)")
        return {"ok": True, "action": bulk.action.value, "dry_run": bulk.dry_run,
                ("matched" if bulk.dry_run else "changed"): count, "message": message}

    async def bulk_review(request: Request) -> Response:
        """The confirmation page of a bulk action from the job list: how many jobs it
        would change, and a button that does it."""
        session = session_of(request)
        try:
            data = await action_input(request)
            bulk = BulkRequest.parse(str(data.get("action", "")), data)
            count = await console.bulk(bulk.action, bulk.selection, dry_run=True, force=bulk.force)
        except Forbidden as exc:
            return pages.render(request, session, "error.html", {"error": str(exc)}, 403)
        except EXPECTED as exc:
            return pages.render(request, session, "error.html", {"error": str(exc).strip()}, status_of(exc))
        back = request.scope.get("root_path", "") + "/jobs" + bulk.filter.link()
        return pages.render(request, session, "bulk.html", {
            "action": bulk.action.value, "count": count, "ids": [str(i) for i in bulk.ids], "force": bulk.force,
            "filter": bulk.filter.as_params(), "selected": len(bulk.ids), "back": back})

    async def bulk_form(request: Request, data: dict[str, Any]) -> str:
        bulk = BulkRequest.parse(request.path_params["action"], data)
        count = await console.bulk(bulk.action, bulk.selection, dry_run=False, force=bulk.force)
        return f"{bulk_done[bulk.action]} {count} job(s)"

    def queue_name(data: dict[str, Any]) -> str:
        name = text(data.get("queue"), "queue")
        if name is None:
            raise BadRequest("Give the queue's name ('queue')")
        return name

    async def pause(request: Request, data: dict[str, Any]) -> str:
        name = queue_name(data)
        await console.pause(name, positive_number(data.get("seconds"), "seconds", float, MAX_SECONDS))
        return f"Queue {name!r} paused"

    async def resume(request: Request, data: dict[str, Any]) -> str:
        name = queue_name(data)
        await console.resume(name)
        return f"Queue {name!r} resumed"

    async def concurrency(request: Request, data: dict[str, Any]) -> str:
        name = queue_name(data)
        value = positive_number(data.get("concurrency"), "concurrency", int, MAX_INTEGER)
        await console.set_concurrency(name, value)
        return f"Queue {name!r} concurrency set to {value or 'the code default'}"

    async def rate_limit(request: Request, data: dict[str, Any]) -> str:
        name = queue_name(data)
        limit = positive_number(data.get("limit"), "limit", int, MAX_INTEGER)
        per = positive_number(data.get("per"), "per", float, MAX_SECONDS) or 1.0
        await console.set_rate_limit(name, limit, per)
        return f"Queue {name!r} rate limit " + (f"set to {limit} per {per:g}s" if limit else "removed")

    def api_action(run: Action) -> Endpoint:
        async def handler(request: Request) -> dict[str, Any]:
            return {"ok": True, "message": await run(request, await action_input(request))}
        return api(handler)

    actions = {f"/jobs/{{job_id}}/{name}": job_action(name) for name in job_actions}
    actions.update({"/queues/pause": pause, "/queues/resume": resume, "/queues/concurrency": concurrency,
                    "/queues/rate_limit": rate_limit})
    routes = [
        # Before /jobs/{job_id}/…, which "bulk" would otherwise match as a job id.
        Route("/jobs/bulk", bulk_review, methods=["POST"]),
        Route("/jobs/bulk/{action}", form_action(bulk_form), methods=["POST"]),
        Route("/api/jobs/bulk/{action}", api(bulk_api), methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_form, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page("overview.html", overview)),
        Route("/queues", page("queues.html", queues)),
        Route("/jobs", page("jobs.html", jobs)),
        Route("/jobs/{job_id}", page("job.html", job)),
        Route("/canvas/{job_id}", page("canvas.html", canvas)),
        Route("/workers", page("workers.html", workers)),
        Route("/schedules", page("schedules.html", schedules)),
        Route("/metrics", metrics_endpoint),
        Route("/api/login", api_login, methods=["POST"]),
        Route("/api/session", api(session_info)),
        Route("/api/overview", api(overview)),
        Route("/api/queues", api(queues)),
        Route("/api/jobs", api(jobs)),
        Route("/api/jobs/{job_id}", api(job)),
        Route("/api/canvas/{job_id}", api(canvas)),
        Route("/api/workers", api(workers)),
        Route("/api/schedules", api(schedules)),
        *(Route(path, form_action(run), methods=["POST"]) for path, run in actions.items()),
        *(Route("/api" + path, api_action(run), methods=["POST"]) for path, run in actions.items()),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await chancy.close()  # the pools were opened in this server's event loop

    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(Guard, auth=auth, allowed_origins=allowed_origins)])
