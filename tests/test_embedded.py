"""chancy.embedded: the throwaway test server and the shared per-user default server."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from chancy import embedded
from chancy.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
UNGENERATED_LOCALE = {"LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}

# A process that holds the shared server until its stdin closes, then exits normally.
HOLDER = """
import json, sys, psycopg
from chancy import embedded
dsn = embedded.default_dsn()
with psycopg.connect(dsn) as conn:
    data_directory = conn.execute("SHOW data_directory").fetchone()[0]
print(json.dumps({"dsn": dsn, "data_directory": data_directory}), flush=True)
sys.stdin.read()
"""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def python(code: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_line(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail(f"no output from subprocess within {timeout}s")
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        pytest.fail(f"subprocess exited {proc.wait()}:\n{proc.stderr.read()}")
    result: dict[str, Any] = json.loads(line)
    return result


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def query(dsn: str, statement: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(statement).fetchone()
        assert row is not None
        return row[0]


# --- throwaway server -----------------------------------------------------------------


def test_throwaway_server_starts_serves_and_stops_without_leftovers() -> None:
    with embedded.start_throwaway_server() as server:
        assert query(server.dsn, "SELECT 1") == 1
        assert query(server.dsn, "SHOW max_connections") == "200"
        assert query(server.dsn, "SHOW fsync") == "off"
        assert len(str(server.base_dir / ".s.PGSQL.5432")) <= 107
        name = "Mixed Case-db"
        db_dsn = server.create_database(name)
        assert query(db_dsn, "SELECT current_database()") == name
        server.drop_database(name)
    assert gone(server.pid)
    assert not server.base_dir.exists()
    server.stop()  # Idempotent.


def test_throwaway_server_dies_with_its_parent_even_on_kill_9() -> None:
    with python(
        "import json, sys\nfrom chancy import embedded\ns = embedded.start_throwaway_server()\n"
        "print(json.dumps({'pid': s.pid, 'dir': str(s.base_dir)}), flush=True)\nsys.stdin.read()"
    ) as parent:
        started = first_line(parent)
        parent.kill()
    wait_for(lambda: gone(started["pid"]), 10, "the orphaned server to stop")
    assert Path(started["dir"]).exists()  # The killed parent could not clean up...
    with embedded.start_throwaway_server():  # ...so the next one does.
        assert not Path(started["dir"]).exists()


def test_throwaway_server_under_an_ungenerated_locale() -> None:
    with python(
        "import json\nfrom chancy import embedded\n"
        "with embedded.start_throwaway_server() as s:\n"
        "    print(json.dumps(embedded.server_info(s.dsn)), flush=True)",
        UNGENERATED_LOCALE,
    ) as proc:
        info = first_line(proc)
        assert proc.wait(30) == 0
    assert info["server_version"]


def test_dsn_fixture_gives_a_fresh_database(dsn: str) -> None:
    assert str(query(dsn, "SELECT current_database()")).startswith("chancy_test_")
    assert query(dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0


# --- shared default server ------------------------------------------------------------


@pytest.fixture
def state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private CHANCY_EMBEDDED_DIR, so tests never touch the real per-user server."""
    path = Path(tempfile.mkdtemp(prefix="chancy-test-", dir="/tmp"))
    path.chmod(0o755)  # As root, the unprivileged server user must reach pg/ inside it.
    monkeypatch.setenv("CHANCY_EMBEDDED_DIR", str(path))
    yield path
    embedded.release()
    if (path / "pg" / "postmaster.pid").exists():  # A failed test may leave it up: stop it.
        pid = postmaster_pid(path / "pg")
        if not gone(pid):
            os.kill(pid, signal.SIGINT)
            wait_for(lambda: gone(pid), 30, "the leftover server to stop")
    server = embedded._SharedServer(path, embedded._server_user())
    shutil.rmtree(server.socket_dir, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)


def test_default_dsn_is_shared_and_stops_with_its_last_holder(state_dir: Path) -> None:
    dsn = embedded.default_dsn()
    assert query(dsn, "SHOW data_directory") == str(state_dir / "pg")
    pid = postmaster_pid(state_dir / "pg")

    with python(HOLDER, UNGENERATED_LOCALE) as other:
        attached = first_line(other)
        assert attached == {"dsn": dsn, "data_directory": str(state_dir / "pg")}
        assert postmaster_pid(state_dir / "pg") == pid  # Attached, did not start another.

        embedded.release()  # Not the last holder: the server stays up.
        assert query(dsn, "SELECT 1") == 1

        assert other.stdin is not None
        other.stdin.close()  # The last holder exits normally...
        assert other.wait(30) == 0
    wait_for(lambda: gone(pid), 30, "the server to stop after its last holder left")


def test_holder_killed_with_sigkill_is_pruned_by_the_next_caller(state_dir: Path) -> None:
    with python(HOLDER) as holder:
        first_line(holder)
        holder.kill()
    pid = postmaster_pid(state_dir / "pg")
    assert not gone(pid)  # Nobody noticed yet.

    embedded.default_dsn()  # Prunes the dead holder...
    assert [p.name for p in (state_dir / "holders").iterdir()] == [str(os.getpid())]
    embedded.release()  # ...so this process is the last holder.
    wait_for(lambda: gone(pid), 30, "the server to stop")


def test_server_killed_with_sigkill_is_restarted(state_dir: Path) -> None:
    dsn = embedded.default_dsn()
    pid = postmaster_pid(state_dir / "pg")
    children = psutil.Process(pid).children()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(gone(p) for p in [pid, *(c.pid for c in children)]), 30,
             "the killed server's processes to exit")
    assert (state_dir / "pg" / "postmaster.pid").exists()  # Stale.

    assert embedded.default_dsn() == dsn
    assert query(dsn, "SELECT 1") == 1
    assert postmaster_pid(state_dir / "pg") != pid


def test_missing_binaries_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_wheel_bindir", lambda: None)
    monkeypatch.setattr(embedded, "_system_bindir", lambda: None)
    embedded._find_binaries.cache_clear()
    try:
        advice = r'pip install "chancy\[embedded\]".*CHANCY_DSN'
        with pytest.raises(ConfigurationError, match=advice):
            embedded.start_throwaway_server()
    finally:
        embedded._find_binaries.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_unreachable_data_dir_is_refused_not_opened_up(monkeypatch: pytest.MonkeyPatch) -> None:
    private = Path(tempfile.mkdtemp(prefix="chancy-test-", dir="/tmp"))  # 0700, root's.
    try:
        monkeypatch.setenv("CHANCY_EMBEDDED_DIR", str(private / "state"))
        with pytest.raises(ConfigurationError, match="CHANCY_EMBEDDED_DIR"):
            embedded.default_dsn()
        assert private.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(private)
