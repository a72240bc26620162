"""``chancy dashboard`` as a real process on a free localhost port, for tests that need
the server's own HTTP handling (client addresses, proxy headers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import httpx

from chancy.dashboard import hash_password
from chancy.testing import eventually

from tests.dashboard.conftest import FAST, PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def dashboard_process(dsn: str, directory: Path, *options: str) -> AsyncIterator[str]:
    """Serve the dashboard of ``dsn`` (user ``olga``, operator) with the given CLI options
    until the block ends; yields its base URL."""
    users = directory / "dashboard-users"
    users.write_text(f"olga:operator:{hash_password(PASSWORD, **FAST)}\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "chancy.cli", "dashboard", "--dsn", dsn, "--users", str(users),
                                "--port", str(port), *options], cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            async def up() -> bool:
                try:
                    return (await client.get("/login")).status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, process.stdout.read().decode()
                    return False

            await eventually(up, timeout=30, interval=0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


def client_from(base: str, address: str) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.x.y.z works on loopback)."""
    return httpx.AsyncClient(base_url=base, transport=httpx.AsyncHTTPTransport(local_address=address))
