"""``chancy dashboard``: hashing a password, refusing to start without users, and serving
the app end to end as a real process."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import psutil

from chancy import Chancy, Queue
from chancy.dashboard import parse_users

from tests.dashboard.conftest import PASSWORD
from tests.dashboard.dashboard_process import dashboard_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chancy.cli", "dashboard", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_hash_password_prints_a_usable_hash():
    done = run_cli("--hash-password", stdin="a long secret\na long secret\n")
    assert done.returncode == 0, done.stderr
    encoded = done.stdout.strip().splitlines()[-1]
    assert parse_users([f"ann:operator:{encoded}"])["ann"].verify("a long secret")


def test_refuses_to_start_without_users(dsn):
    done = run_cli("--dsn", dsn)
    assert done.returncode == 2 and "nothing is served without a login" in done.stderr


async def test_serves_the_app_under_a_proxy_prefix(dsn, tmp_path):
    app = Chancy(dsn, plugins=[Queue("default")])
    await app.migrate()
    await app.push("reports.build", 2026)
    await app.close()
    async with dashboard_process(dsn, tmp_path, "--root-path", "/chancy") as base, \
            httpx.AsyncClient(base_url=base) as client:
        port = int(base.rsplit(":", 1)[1])
        listening = [c.laddr for c in psutil.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)  # localhost by default
        assert (await client.get("/api/queues")).status_code == 401
        # Behind a proxy that strips /chancy, links and redirects keep the public prefix.
        redirect = await client.get("/jobs")
        assert redirect.headers["location"] == "/chancy/login?next=%2Fchancy%2Fjobs"
        assert 'href="/chancy/static/dashboard.css"' in (await client.get("/login")).text
        login = await client.post("/api/login", json={"username": "olga", "password": PASSWORD})
        assert login.status_code == 200 and "path=/chancy/" in login.headers["set-cookie"].lower()
        # A browser sends the cookie to /chancy/…, which the proxy forwards as /…
        cookie = login.headers["set-cookie"].split(";")[0]
        queues = (await client.get("/api/queues", headers={"cookie": cookie})).json()["queues"]
        assert [q["name"] for q in queues] == ["default"]
