"""Nothing without a login, nothing changed from another site or without the session's
CSRF token, viewers only look, and job data is shown as text."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from chancy.dashboard import User, hash_password, parse_users
from chancy.dashboard.app import create_app
from chancy.dashboard.auth import Authenticator
from chancy.errors import ConfigurationError

from tests.dashboard import dashboard_tasks as tasks
from tests.dashboard.conftest import BASE, PASSWORD, USERS, login

PAGES = ["/", "/queues", "/jobs", "/workers", "/schedules"]
APIS = ["/api/overview", "/api/queues", "/api/jobs", "/api/workers", "/api/schedules", "/api/session"]


async def test_nothing_is_served_without_a_login(app, anonymous):
    ref = await app.push(tasks.add, 1, 2)
    for path in PAGES + [f"/jobs/{ref.id}", f"/canvas/{ref.id}"]:
        response = await anonymous.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
    for path in APIS + [f"/api/jobs/{ref.id}", "/metrics"]:
        response = await anonymous.get(path)
        assert response.status_code == 401, path
        assert "secret" not in response.text
    for path in [f"/api/jobs/{ref.id}/cancel", f"/jobs/{ref.id}/cancel", "/api/queues/pause"]:
        response = await anonymous.post(path, json={"queue": "default"}, headers={"origin": BASE})
        assert response.status_code in (303, 401), path
    assert (await app.get_job(ref)).state.value == "pending"
    assert (await anonymous.get("/login")).status_code == 200
    assert (await anonymous.get("/static/dashboard.css")).status_code == 200


async def test_wrong_passwords_are_refused_and_throttled(anonymous):
    for _ in range(5):
        response = await anonymous.post("/api/login", json={"username": "olga", "password": "nope"})
        assert response.status_code == 401 and "Wrong user name or password" in response.json()["error"]
    unknown = await anonymous.post("/api/login", json={"username": "mallory", "password": PASSWORD})
    assert unknown.status_code == 401 and "Wrong user name or password" in unknown.json()["error"]
    throttled = await anonymous.post("/api/login", json={"username": "olga", "password": PASSWORD})
    assert throttled.status_code == 401 and "Too many failed logins" in throttled.json()["error"]
    assert "set-cookie" not in throttled.headers


async def test_session_cookie_flags_and_logout(dashboard, anonymous):
    response = await anonymous.post("/login", data={"username": "olga", "password": PASSWORD, "next": "/jobs"},
                                    headers={"origin": BASE})
    assert response.status_code == 303 and response.headers["location"] == "/jobs"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    page = await anonymous.get("/jobs")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert (await anonymous.post("/logout", data={}, headers={"origin": BASE})).status_code == 403
    out = await anonymous.post("/logout", data={"csrf_token": token}, headers={"origin": BASE})
    assert out.status_code == 303
    assert (await anonymous.get("/jobs")).status_code == 303

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url="https://dash.test") as tls:
        response = await tls.post("/api/login", json={"username": "olga", "password": PASSWORD})
        assert "secure" in response.headers["set-cookie"].lower()


async def test_login_redirects_only_inside_the_dashboard(anonymous):
    for target in ["https://evil.example/", "//evil.example/x", "/\\evil.example"]:
        response = await anonymous.post("/login", data={"username": "olga", "password": PASSWORD, "next": target})
        assert response.headers["location"] == "/", target


async def test_cross_site_requests_are_refused(app, operator):
    ref = await app.push(tasks.add, 1, 2)
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"},
                    {"referer": "https://evil.example/page"}, {"origin": "null"}):
        response = await operator.post(f"/api/jobs/{ref.id}/cancel", headers=headers)
        assert response.status_code == 403 and "cross-site" in response.json()["error"], headers
        form = await operator.post(f"/jobs/{ref.id}/cancel", headers=headers)
        assert form.status_code == 403
    login = await operator.post("/login", data={"username": "olga", "password": PASSWORD},
                                headers={"origin": "https://evil.example"})
    assert login.status_code == 403
    assert (await app.get_job(ref)).state.value == "pending"


async def test_state_changes_need_the_sessions_csrf_token(app, operator):
    ref = await app.push(tasks.add, 1, 2)
    token = operator.headers.pop("x-csrf-token")
    assert (await operator.post(f"/api/jobs/{ref.id}/cancel")).status_code == 403
    assert (await operator.post(f"/api/jobs/{ref.id}/cancel", headers={"x-csrf-token": "forged"})).status_code == 403
    form = await operator.post(f"/jobs/{ref.id}/cancel", data={"csrf_token": "forged"})
    assert form.status_code == 403
    assert (await app.get_job(ref)).state.value == "pending"
    done = await operator.post(f"/jobs/{ref.id}/cancel", data={"csrf_token": token, "next": f"/jobs/{ref.id}"})
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{ref.id}"
    assert (await app.get_job(ref)).state.value == "cancelled"
    page = await operator.get(f"/jobs/{ref.id}")
    assert f"Job {ref.id} cancelled" in page.text


async def test_viewers_look_but_do_not_touch(app, viewer):
    ref = await app.push(tasks.add, 1, 2)
    assert (await viewer.get(f"/api/jobs/{ref.id}")).status_code == 200
    refused = await viewer.post(f"/api/jobs/{ref.id}/cancel")
    assert refused.status_code == 403 and "role viewer" in refused.json()["error"]
    assert (await viewer.post("/api/queues/pause", json={"queue": "default"})).status_code == 403
    assert (await app.get_job(ref)).state.value == "pending"
    page = await viewer.get(f"/jobs/{ref.id}")
    assert page.status_code == 200 and "/cancel" not in page.text


async def test_basic_auth_reads_but_never_writes(app, anonymous):
    ref = await app.push(tasks.add, 1, 2)
    good = "Basic " + base64.b64encode(f"olga:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"olga:wrong").decode()
    assert (await anonymous.get("/metrics", headers={"authorization": good})).status_code == 200
    assert (await anonymous.get("/api/queues", headers={"authorization": good})).status_code == 200
    assert (await anonymous.get("/metrics", headers={"authorization": bad})).status_code == 401
    write = await anonymous.post(f"/api/jobs/{ref.id}/cancel", headers={"authorization": good})
    assert write.status_code == 401
    assert (await app.get_job(ref)).state.value == "pending"


async def test_job_data_is_escaped_and_headers_are_strict(app, operator):
    evil = "<script>alert('x')</script>"
    ref = await app.push(tasks.fail, evil)
    page = await operator.get(f"/jobs/{ref.id}")
    assert evil not in page.text and "&lt;script&gt;" in page.text
    listing = await operator.get("/jobs")
    assert evil not in listing.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"


def test_passwords_are_hashed_with_scrypt_and_users_validated():
    encoded = hash_password("a long secret")
    assert encoded.startswith("scrypt$16384$8$1$") and "a long secret" not in encoded
    user = User("ann", encoded, "operator")
    assert user.verify("a long secret") and not user.verify("a long secreT")
    assert Authenticator([user]).check("ann", "a long secret") is user
    assert Authenticator([user]).check("bob", "a long secret") is None
    with pytest.raises(ConfigurationError, match="at least 8"):
        hash_password("short")
    with pytest.raises(ConfigurationError, match="scrypt"):
        User("ann", "plaintext")
    with pytest.raises(ConfigurationError, match="role must be"):
        parse_users([f"ann:admin:{encoded}"])
    with pytest.raises(ConfigurationError, match="listed twice"):
        parse_users([f"ann:viewer:{encoded}", f"ann:operator:{encoded}"])
    assert parse_users(["# ops", "", f"ann:viewer:{encoded}"])["ann"].role.value == "viewer"
    with pytest.raises(ConfigurationError, match="at least one user"):
        create_app(object(), [])  # type: ignore[arg-type]


async def test_mounted_under_a_prefix(app, dashboard):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops/chancy", app=dashboard)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url=BASE) as client:
        first = await client.get("/ops/chancy/jobs")
        assert first.status_code == 303 and first.headers["location"].startswith("/ops/chancy/login?next=")
        response = await client.post("/ops/chancy/login", data={"username": "olga", "password": PASSWORD,
                                                                "next": "/ops/chancy/queues"})
        assert response.headers["location"] == "/ops/chancy/queues"
        assert "path=/ops/chancy/" in response.headers["set-cookie"].lower()
        page = await client.get("/ops/chancy/queues")
        assert page.status_code == 200 and 'href="/ops/chancy/static/dashboard.css"' in page.text
        assert (await client.get("/ops/chancy/static/dashboard.js")).status_code == 200


async def test_malformed_and_oversized_requests_are_refused_cleanly(app, anonymous, operator):
    ref = await app.push(tasks.add, 1, 2)
    huge = await operator.post("/api/queues/pause", content=b"x" * 70_000,
                               headers={"content-type": "application/json"})
    assert huge.status_code == 400 and "larger than" in huge.json()["error"]
    broken = await operator.post(f"/api/jobs/{ref.id}/cancel", content=b"{nope",
                                 headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    listed = await operator.post(f"/api/jobs/{ref.id}/cancel", json=[1, 2])
    assert listed.status_code == 400
    login = await anonymous.post("/api/login", content=b"[", headers={"content-type": "application/json"})
    assert login.status_code == 400
    form_login = await anonymous.post("/login", content=b"x" * 70_000,
                                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert form_login.status_code == 400
    assert (await app.get_job(ref)).state.value == "pending"


def test_login_throttle_forgets_stale_keys():
    from chancy.dashboard.auth import LoginThrottle

    throttle = LoginThrottle(limit=2, window=0.0)
    throttle.max_keys = 3
    for n in range(10):
        throttle.failed((f"name{n}", "client"))
    assert len(throttle._failures) <= 3
    assert not throttle.blocked(("name9", "client"))  # its failures are older than the window


async def test_an_unreachable_database_is_a_clear_503():
    from chancy import Chancy

    down = Chancy("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=1)
    dashboard = create_app(down, USERS, refresh_seconds=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard), base_url=BASE) as client:
        await login(client, "vera")
        api = await client.get("/api/queues")
        assert api.status_code == 503 and "Cannot connect to Postgres" in api.json()["error"]
        page = await client.get("/jobs")
        assert page.status_code == 503 and "Cannot connect to Postgres" in page.text
    await down.close()


async def test_odd_characters_in_credentials_and_tokens_are_just_wrong(app, anonymous, operator):
    ref = await app.push(tasks.add, 1, 2)
    as_json = {"content-type": "application/json"}
    odd = await anonymous.post("/api/login", content=rb'{"username": "olga", "password": "\ud800 \u00e9"}',
                               headers=as_json)
    assert odd.status_code == 401
    forged = await operator.post(f"/api/jobs/{ref.id}/cancel", content=rb'{"csrf_token": "\u00e9\ud800"}',
                                 headers={**as_json, "x-csrf-token": ""})
    assert forged.status_code == 403
    assert (await app.get_job(ref)).state.value == "pending"


async def test_websockets_are_refused(dashboard):
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/api/queues", "raw_path": b"/api/queues", "root_path": "",
             "headers": [], "query_string": b"", "scheme": "ws", "server": ("dash.test", 80), "subprotocols": []}
    await dashboard(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
