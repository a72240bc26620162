"""A PgBouncer in transaction-pooling mode in front of a test database, as many
production setups put one in front of Postgres (tests only)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psycopg

#: Server connections the bouncer keeps per database: fewer than Chancy's pools hold, so
#: clients share server connections and any session state would leak between them.
POOL_SIZE = 3


def binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as(host: str) -> tuple[int, int] | None:
    """The uid/gid to run the bouncer as, if not ourselves: PgBouncer refuses to run as
    root, and a unix-socket server's private directory admits only its owner."""
    if host.startswith("/"):
        st = os.stat(host)
        return st.st_uid, st.st_gid
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    return None


@contextlib.contextmanager
def transaction_pooler(dsn: str, listen_addr: str = "127.0.0.1") -> Iterator[str]:
    """Start PgBouncer (transaction pooling) for ``dsn``'s database; yield a DSN through it
    (on 127.0.0.1; ``listen_addr``, e.g. ``*``, for other addresses too)."""
    exe = binary()
    if exe is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    host, port = str(params.get("host") or "/var/run/postgresql"), int(params.get("port") or 5432)
    user, dbname = str(params.get("user") or "postgres"), str(params["dbname"])
    target = f"host={host} port={port} user={user} dbname={dbname}"
    if params.get("password"):
        target += f" password={params['password']}"
    listen = _free_port()
    run_as = _run_as(host)
    workdir = Path(tempfile.mkdtemp(prefix="chancy-pgbouncer-"))
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{dbname} = {target}\n"
        "[pgbouncer]\n"
        f"listen_addr = {listen_addr}\nlisten_port = {listen}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {POOL_SIZE}\nmax_client_conn = 500\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    kwargs = {}
    if run_as is not None and run_as[0] != os.geteuid():
        os.chown(workdir, *run_as)
        kwargs = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
    process = subprocess.Popen([exe, str(workdir / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, **kwargs)
    pooled = f"postgresql://{user}@127.0.0.1:{listen}/{dbname}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(pooled, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = workdir / "pgbouncer.log"
                    raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield pooled
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
